"""webrtcvad decisions on 10 ms frames of 16 kHz audio."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import webrtcvad

from streaming.events import SAMPLE_RATE, Samples


class WebrtcFrames:
    def __init__(self, aggressiveness: int) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"webrtc_aggressiveness must be 0..3, got {aggressiveness}")
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: Samples) -> bool:
        """One 10 ms frame of int16 samples (float frames are converted)."""
        if frame.dtype != np.int16:
            scaled: npt.NDArray[np.floating[Any]] = np.multiply(np.clip(frame, -1.0, 32767 / 32768), 32768)
            frame = scaled.astype(np.int16)
        speech: bool = self._vad.is_speech(frame.tobytes(), SAMPLE_RATE)  # webrtcvad is untyped
        return speech

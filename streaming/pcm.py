"""PCM16LE decoding and streaming resampling to 16 kHz."""

from __future__ import annotations

import numpy as np
import soxr

from streaming.events import SAMPLE_RATE, Audio, Pcm16


class AudioFormatError(ValueError):
    """A binary frame cannot be PCM16LE mono."""


def decode_pcm16(frame: bytes) -> Audio:
    """PCM16LE bytes -> float32 samples in [-1, 1)."""
    return decode_int16(frame).astype(np.float32) / 32768.0


def decode_int16(frame: bytes) -> Pcm16:
    """PCM16LE bytes -> int16 samples (a view, no copy)."""
    if len(frame) % 2:
        raise AudioFormatError(f"binary frame has {len(frame)} bytes; PCM16 needs an even count (2 bytes per sample)")
    return np.frombuffer(frame, dtype="<i2")


class Resampler:
    """Stateful resampler to 16 kHz (soxr, high quality); a no-op at 16 kHz."""

    def __init__(self, input_rate_hz: int) -> None:
        self.input_rate_hz = input_rate_hz
        self._stream = (
            None
            if input_rate_hz == SAMPLE_RATE
            else soxr.ResampleStream(input_rate_hz, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def process(self, samples: Audio) -> Audio:
        if self._stream is None:
            return samples
        out: Audio = self._stream.resample_chunk(samples, last=False)  # soxr is untyped
        return out

    def flush(self) -> Audio:
        """Samples the filter still holds at end of stream."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail: Audio = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        return tail

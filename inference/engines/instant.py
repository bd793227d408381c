"""Benchmark engine: answers at once with a fixed caption and no recognition at all.

It exists so bench/load.py can measure the server's own cost (sockets, VAD, endpointing,
batching) apart from model cost. It is never a default; config must name it explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from inference.engines.base import DecodeOptions, DecodeResult


class InstantEngine:
    name = "instant"
    model = "instant (benchmark engine: fixed text, no recognition)"
    device = "cpu"
    streaming = False
    file_model = model

    def decode(self, audios: Sequence[npt.NDArray[np.float32]], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        return [DecodeResult(f"speech {len(audio) / 16000:.2f} s") for audio in audios]

    def language_problem(self, language: str) -> str | None:
        return None  # no recognition: any language gets the same fixed text

    def on_cpu(self) -> InstantEngine:
        return self

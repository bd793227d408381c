"""A deterministic engine whose behaviour each request's audio selects, so one deployment of the Ray
pool serves every test (deploying costs seconds): it lives in the replica, out of the test's reach.

audio[0] > 0: the model call sleeps that many seconds (the longest in the batch) and first writes
`decoding-<pid>` into `marker_dir` (a test finds the replica to kill); audio[0] == POISON: the call
raises; audio[0] == SPOKEN: the text is spoken-form English for ITN. Otherwise the text says the
audio's length. Every call is logged (lengths, start time, pid). Streaming: the state counts chunks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from inference.batch_decoder import BatchDecoder
from inference.engines.base import DecodeResult

POISON = -1.0
SPOKEN = -2.0


def clip(seconds: float, head: float = 0.0) -> np.ndarray:
    """`seconds` of audio (told apart by length) whose first sample selects behaviour (see above)."""
    audio = np.zeros(round(seconds * 16000), np.float32)
    audio[0] = head
    return audio


class PoolEngine:
    name, model, device = "fake", "deterministic stand-in (text from audio length)", "cpu"
    file_model, streaming = model, True

    def __init__(self, marker_dir: str = "") -> None:
        self.marker_dir = marker_dir
        self.calls: list[dict] = []

    def decode(self, audios, options):
        heads = [float(a[0]) if len(a) else 0.0 for a in audios]
        self.calls.append({"lengths": [len(a) for a in audios], "started": time.time(), "pid": os.getpid()})
        delay = max([h for h in heads if h > 0], default=0.0)
        if delay:
            if self.marker_dir:
                (Path(self.marker_dir) / f"decoding-{os.getpid()}").write_text(str(time.time()))
            time.sleep(delay)
        if POISON in heads:
            raise RuntimeError("injected model failure")
        return [
            DecodeResult("it costs twenty five dollars" if h == SPOKEN else f"speech {len(a) / 16000:.2f} s")
            for a, h in zip(audios, heads)
        ]

    def language_problem(self, language):
        return None if language in ("auto", "en", "zh") else f"language {language!r} is not one the fake knows"

    def on_cpu(self):
        return self

    def new_stream_state(self, *args):
        return {"chunks": 0, "args": args}

    def stream(self, steps):
        out = []
        for state, _audio, is_final, _options in steps:
            state["chunks"] += 1
            out.append(DecodeResult(f"chunks {state['chunks']}{' final' if is_final else ''}"))
        return out


def make_decoder(marker_dir: str = "") -> BatchDecoder:
    """What a replica builds (the local backend builds the same): the fake engine, with real ITN."""
    from text.itn import InverseNormalizer

    engine = PoolEngine(marker_dir)
    return BatchDecoder({engine.name: engine}, engine.name, InverseNormalizer())


def malloc_environment(decoder: BatchDecoder) -> dict[str, str]:
    """The glibc malloc settings the replica's process was started with (inference/allocator.py)."""
    return {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}


def calls(decoder: BatchDecoder) -> list[dict]:
    """The model calls so far, read where the engine lives (BatchDecoder.run_on_engines)."""
    return list(decoder.engines["fake"].calls)  # type: ignore[attr-defined]

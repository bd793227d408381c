"""Whisper encoder window vs speed and accuracy on the same espeak-ng segments, in one run.

    .venv/bin/python bench/whisper_window.py

Whisper pads every input to 30 s; `whisper.min_window_s` lets short segments use a shorter
window. Prints decode time and word error rate for each window setting.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.engines.base import DecodeOptions  # noqa: E402
from tests.speech import compose  # noqa: E402
from tests.test_e2e import SCRIPT  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402

LONG = "the quick brown fox jumps over the lazy dog and runs away into the forest while the farmer watches"


def main() -> None:
    from inference.engines.whisper import WhisperEngine
    from settings.config import load

    references = [*SCRIPT, "hello world", LONG]
    clips = [compose([0.3, text, 0.3]).audio for text in references]
    print(f"{len(clips)} segments, {sum(len(c) for c in clips) / 16000:.1f} s of speech, one at a time")
    for window in (30.0, 20.0, 10.0, 5.0):
        engine = WhisperEngine(replace(load().whisper, min_window_s=window), "cpu")
        began = time.perf_counter()
        texts = [engine.decode([clip], [DecodeOptions()])[0].text for clip in clips]
        elapsed = time.perf_counter() - began
        wer = word_error_rate(" ".join(references), " ".join(texts))
        print(f"min_window_s={window:>4}: {elapsed:6.2f} s  WER {wer:.3f}")


if __name__ == "__main__":
    main()

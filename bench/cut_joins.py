"""Words lost or doubled where a segment is cut for length, swept over many cut points, for the two
ways of joining the segment after a cut to the final before it (streaming.cuts), in one run.

    .venv/bin/python bench/cut_joins.py                 # 24 cut points through the 34 s monologue
    .venv/bin/python bench/cut_joins.py --cuts 12 --between 28.9 29.4   # densely around one word

Around each point of the 34 s espeak monologue (no pause), --piece-s before it is a segment cut there
for length and --piece-s after it the segment that follows (with whisper.context_s of audio before
the cut; the first with whisper.cut_lookahead_s after it), as the endpointer hands them on; both are
decoded by the embedded Whisper base:
- `time`: the second part keeps the words whose middle lies after where the first part's words
  ended (the rule before 27 Nov 2026);
- `prefix`: the second part's decode is forced to start with the first part's words that lie in its
  context, and keeps what Whisper says after them.
A word missing or extra within two words of the join counts when it is missing or extra against
both the text spoken and the whole-file decode (tests/test_jobs_cuts.py's rule).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from inference.engines.base import DecodeOptions  # noqa: E402
from streaming.cuts import CutJoins  # noqa: E402
from streaming.events import SegmentClosed  # noqa: E402
from tests.corpus import MONOLOGUE  # noqa: E402
from tests.speech import compose  # noqa: E402
from tests.test_jobs_cuts import lost_or_doubled  # noqa: E402
from tests.wer import normalise  # noqa: E402

RATE = 16000


def halves(
    audio: np.ndarray, cut: int, piece: int, context: int, lookahead: int
) -> tuple[SegmentClosed, SegmentClosed]:
    """The `piece` samples before `cut` (a segment cut for length) and up to `piece` after it."""
    start, end = max(0, cut - piece), min(len(audio), cut + piece)
    first = SegmentClosed(0, start, cut, start, cut, "max_length", audio[start:cut], after=audio[cut : cut + lookahead])
    second = SegmentClosed(
        1, cut, end, cut, end, "silence", audio[cut:end], context=audio[max(0, cut - context) : cut], follows_cut=True
    )
    return first, second


def join(engine, first: SegmentClosed, second: SegmentClosed, use_prefix: bool) -> list[list[str]]:
    joins, options, pieces = CutJoins(), DecodeOptions(language="en"), []
    for event in (first, second):
        join = joins.request(event)
        prefix = join.prefix if use_prefix else ""
        decode = dataclasses.replace(
            options, context_samples=join.context_samples, after_samples=join.after_samples, prefix=prefix
        )
        (result,) = engine.decode([join.audio], [decode])
        joins.decoded(event, result)
        pieces.append(normalise(result.text))
    return pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=24)
    parser.add_argument("--piece-s", type=float, default=10.0, help="length of each part (a job's max_segment_s)")
    parser.add_argument("--between", type=float, nargs=2, default=(4.0, 31.0), help="first and last cut (s)")
    args = parser.parse_args()
    from inference.engines.whisper import WhisperEngine
    from tests.conftest import make_config

    config = make_config()
    engine = WhisperEngine(config.whisper, "cpu")
    audio = compose([0.3, MONOLOGUE, 0.5], rate_wpm=150, voice="en-us").audio
    (whole,) = engine.decode([audio], [DecodeOptions(language="en")])
    whole_words = normalise(whole.text)
    context, lookahead = round(config.whisper.context_s * RATE), round(config.whisper.cut_lookahead_s * RATE)
    # Cut points spread over 6-28 s, off any round number so they land inside words as often as between.
    points = np.linspace(*args.between, args.cuts) + 0.037
    found: dict[str, list[str]] = {"time": [], "prefix": []}
    spent = {"time": 0.0, "prefix": 0.0}
    for at in points:
        first, second = halves(audio, round(at * RATE), round(args.piece_s * RATE), context, lookahead)
        for rule in found:
            began = time.perf_counter()
            pieces = join(engine, first, second, rule == "prefix")
            spent[rule] += time.perf_counter() - began
            for problem in lost_or_doubled(MONOLOGUE, whole_words, pieces):
                found[rule].append(f"cut at {at:.2f} s: {problem}")
    print(f"{len(points)} cuts through the 34 s monologue (whisper.context_s {config.whisper.context_s}, "
          f"cut_lookahead_s {config.whisper.cut_lookahead_s})")  # fmt: skip
    print(f"{'rule':8} | {'cuts with a word lost or doubled':>32} | {'decode time':>11}")
    for rule, problems in found.items():
        print(f"{rule:8} | {len(problems):>32} | {spent[rule]:10.1f}s")
    for rule, problems in found.items():
        for problem in problems:
            print(f"  {rule}: {problem}")


if __name__ == "__main__":
    main()

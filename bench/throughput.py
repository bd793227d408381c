"""Executor throughput with cross-stream batching on vs off, on the same segments in one run.

    .venv/bin/python bench/throughput.py [--segments 16] [--batch 8] [--rounds 2]

Submits every segment at once (as many streams closing segments together would), through the
real executor and the embedded Whisper engine, alternating batched and unbatched rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.engines.base import DecodeOptions  # noqa: E402
from inference.executor import InferenceExecutor  # noqa: E402
from tests.speech import compose  # noqa: E402

PHRASES = [
    "hello world",
    "good morning everyone",
    "please open the door",
    "thank you very much for coming",
    "the quick brown fox jumps over the lazy dog",
    "write down your questions",
]


async def round_trip(engine, scorer, clips, batch: int) -> tuple[float, int]:
    executor = InferenceExecutor(engine, scorer, batch, 20, 64)
    await executor.start()
    began = time.perf_counter()
    await asyncio.gather(*[executor.submit_final(i, 0, clip, DecodeOptions()) for i, clip in enumerate(clips)])
    elapsed = time.perf_counter() - began
    calls = executor.stats.batches
    await executor.close()
    return elapsed, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from inference.engines.whisper import WhisperEngine
    from inference.vad_fsmn import FsmnScorer
    from settings.config import load

    engine, scorer = WhisperEngine(load().whisper, "cpu"), FsmnScorer()
    clips = [compose([0.2, PHRASES[i % len(PHRASES)], 0.3]).audio for i in range(args.segments)]
    audio_s = sum(len(c) for c in clips) / 16000
    print(f"{args.segments} segments, {audio_s:.1f} s of speech, engine {engine.model} on cpu")
    totals = {args.batch: 0.0, 1: 0.0}
    for r in range(args.rounds):
        for batch in (args.batch, 1):
            elapsed, calls = asyncio.run(round_trip(engine, scorer, clips, batch))
            totals[batch] += elapsed
            print(
                f"round {r + 1} max_batch={batch:<2} {calls:>3} model calls {elapsed:6.2f} s "
                f"{args.segments / elapsed:6.2f} segments/s"
            )
    on, off = totals[args.batch] / args.rounds, totals[1] / args.rounds
    print(
        f"batching on: {args.segments / on:.2f} segments/s, off: {args.segments / off:.2f} segments/s, "
        f"ratio on/off = {off / on:.2f}x"
    )


if __name__ == "__main__":
    main()

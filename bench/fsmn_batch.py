"""FSMN VAD scoring cost: one batched call for N streams' chunks, as the VAD worker makes it.

    .venv/bin/python bench/fsmn_batch.py [--streams 1 50 200] [--chunk-ms 100] [--rounds 20]

One torch thread (as in the worker). Each stream keeps its own streaming state across rounds, so
the numbers include features, LFR, the model and the cache bookkeeping of a steady stream.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.vad_fsmn import FsmnScorer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scorer = FsmnScorer()
    rng = np.random.default_rng(0)
    samples = 16 * args.chunk_ms
    print(f"{'streams':>7} | {'ms per call':>11} | {'ms per stream-chunk':>19}")
    for count in args.streams:
        states = [scorer.new_state() for _ in range(count)]
        audio = (rng.standard_normal((count, samples)) * 3000).astype(np.int16)
        for _ in range(3):  # warm-up: first-call allocations, caches filled
            scorer.score(list(zip(states, audio)))
        began = time.perf_counter()
        for _ in range(args.rounds):
            scorer.score(list(zip(states, audio)))
        per_call = (time.perf_counter() - began) / args.rounds * 1000
        print(f"{count:>7} | {per_call:>11.1f} | {per_call / count:>19.3f}")


if __name__ == "__main__":
    main()

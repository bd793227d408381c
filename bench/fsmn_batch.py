"""FSMN VAD scoring cost: one batched call for N streams' chunks, as the VAD worker makes it.

    .venv/bin/python bench/fsmn_batch.py [--streams 1 50 200 400] [--chunk-ms 100] [--rounds 20]
    .venv/bin/python bench/fsmn_batch.py --against /tmp/before   # this checkout's scorer and another's

One BLAS thread (threadpoolctl), and one torch thread where a checkout's scorer uses torch, as in
the worker. Each stream keeps its own streaming state across rounds, so the numbers include
features, LFR, the model and the cache bookkeeping of a steady stream.

With --against, each checkout's scorer runs in a process of its own (with that checkout's
inference package); the two take turns, one stream count at a time, --repeats times, and the
table shows the fastest turn of each, side by side.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def measure(root: Path, chunk_ms: int, rounds: int) -> None:
    """Child: load `root`'s scorer, then for each stream count read from stdin print ms per call."""
    sys.path.insert(0, str(root))
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(1, user_api="blas")
    from inference.vad_fsmn import FsmnScorer

    uses_torch = "torch" in sys.modules
    if uses_torch:
        sys.modules["torch"].set_num_threads(1)
    scorer = FsmnScorer()
    blas = ", ".join(f"{i['internal_api']} {i['num_threads']} thread(s)" for i in threadpool_info())
    print(json.dumps({"torch": uses_torch, "blas": blas}), flush=True)
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        count = int(line)
        states = [scorer.new_state() for _ in range(count)]
        audio = (rng.standard_normal((count, 16 * chunk_ms)) * 3000).astype(np.int16)
        for _ in range(3):  # warm-up: first-call allocations, caches filled
            scorer.score(list(zip(states, audio)))
        began = time.perf_counter()
        for _ in range(rounds):
            scorer.score(list(zip(states, audio)))
        print(json.dumps((time.perf_counter() - began) / rounds * 1000), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 50, 200, 400])
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--against", type=Path, help="another checkout whose scorer to time alongside")
    parser.add_argument("--repeats", type=int, default=3, help="turns per stream count with --against")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.chunk_ms, args.rounds)
        return
    roots = [HERE] + ([args.against.resolve()] if args.against else [])
    repeats = args.repeats if args.against else 1
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--measure", str(root), "--chunk-ms", str(args.chunk_ms)]
            + ["--rounds", str(args.rounds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for root in roots
    ]
    try:
        for root, child in zip(roots, children):
            about = json.loads(child.stdout.readline())  # type: ignore[union-attr]
            print(f"{root}: {'torch (1 thread)' if about['torch'] else 'numpy'}; BLAS: {about['blas']}")
        best: dict[int, list[float]] = {}
        for count in args.streams:
            best[count] = [float("inf")] * len(children)
            for _ in range(repeats):
                for i, child in enumerate(children):  # in turns: a machine that gets busier slows both
                    child.stdin.write(f"{count}\n")  # type: ignore[union-attr]
                    child.stdin.flush()  # type: ignore[union-attr]
                    ms = float(json.loads(child.stdout.readline()))  # type: ignore[union-attr]
                    best[count][i] = min(best[count][i], ms)
    finally:
        for child in children:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait()
    names = ["this checkout", str(args.against)] if args.against else ["ms per call"]
    print(f"{'streams':>7} | " + " | ".join(f"{n:>22}" for n in names) + " | ms per stream-chunk")
    for count, times in best.items():
        per_chunk = " / ".join(f"{t / count:.3f}" for t in times)
        print(f"{count:>7} | " + " | ".join(f"{t:>22.1f}" for t in times) + f" | {per_chunk}")


if __name__ == "__main__":
    main()

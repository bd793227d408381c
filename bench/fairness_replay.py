"""bench/fairness.py's live script replayed through the real Scheduler on a simulated clock.

    .venv/bin/python bench/fairness_replay.py                          # holds 0, 5, 10, 30 s
    .venv/bin/python bench/fairness_replay.py --final-s 0.9 --background-s 1.3 --holds 0 10

No server, no model: each model call takes the time given (defaults: p50s of a trace of
bench/fairness.py's `fast` scenario on the 2-core machine, quiet: a live final 0.9 s, a live partial
re-decode 0.3 s, a background segment 1.3 s; a batch of several takes their sum, as on a CPU), each
varied by up to +-`--jitter`. The speaker is the live client of bench/fairness.py (its espeak
script, 2pass): speech starts are seen `--onset-s` late, a segment closes `--silence-s` after its
speech, partials are asked every `--partial-s`. Beside it, a neighbour that always has background
work queued (the OpenAI endpoint, a fast WebSocket, jobs all look the same here). Printed per hold
(inference.background_hold_ms): the live final latency p50/p95 (speech end -> decoded), the p95
ratio to the same script alone, and the background calls done while the script ran (the
neighbour's share). What the scheduling policy alone does to the ratio, free of the noise of a
shared machine; bench/fairness.py measures the real thing.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import SCRIPT, pct  # noqa: E402
from inference.scheduler import LIVE, Kind, Request, Scheduler, Source  # noqa: E402
from tests.speech import compose  # noqa: E402

NEIGHBOUR = Source("greedy", live=False)
SPEAKER = 1


def replay(spans: list[tuple[float, float]], hold_s: float, neighbour: bool, args, seed: int) -> dict:
    """One run of the script; latencies of its finals and the background calls done meanwhile."""
    jitter = random.Random(seed)
    scheduler = Scheduler(4, "whisper", background_batch_size=1, hold_s=hold_s)
    if neighbour:
        for i in range(200):  # more than the script leaves time for (about 25 calls)
            scheduler.add(Request(Kind.FINAL, -1, i, "whisper", NEIGHBOUR))
    events: list[tuple[float, int, str, object]] = []
    order = itertools.count()

    def at(time: float, what: str, payload: object = None) -> None:
        heapq.heappush(events, (time, next(order), what, payload))

    for segment, (start, end) in enumerate(spans):
        at(start + args.onset_s, "speech", segment)
        asked = start + args.partial_s
        while asked < end + args.silence_s:
            at(asked, "partial", segment)
            asked += args.partial_s
        at(end + args.silence_s, "final", segment)
    latency: dict[int, float] = {}
    background_calls, busy_until = 0, 0.0
    while events and len(latency) < len(spans):
        now, _, what, payload = heapq.heappop(events)
        if what == "speech":
            scheduler.speech_started(SPEAKER, payload)
        elif what in ("partial", "final"):
            kind = Kind.PARTIAL if what == "partial" else Kind.FINAL
            scheduler.add(Request(kind, SPEAKER, payload, "whisper", LIVE, submitted=now))
        elif what == "done":
            for request in payload:
                if request.source.live and request.kind is Kind.FINAL:
                    latency[request.segment] = now - spans[request.segment][1]
                background_calls += not request.source.live
        if now < busy_until:
            continue  # the model is busy: whatever came waits in the scheduler
        batch = scheduler.take_batch(now)
        if batch:
            seconds = sum(_call_s(r, args) for r in batch) * (1 + jitter.uniform(-args.jitter, args.jitter))
            busy_until = now + seconds
            at(busy_until, "done", batch)
        elif scheduler.hold_ends_at() is not None:
            at(scheduler.hold_ends_at(), "wake")
    values = list(latency.values())
    return {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "background": background_calls}


def _call_s(request: Request, args) -> float:
    if not request.source.live:
        return args.background_s
    return args.final_s if request.kind is Kind.FINAL else args.partial_call_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=4, help="the live script this many times (3 phrases each)")
    parser.add_argument("--holds", type=float, nargs="+", default=[0, 5, 10, 30], help="background_hold_ms / 1000")
    parser.add_argument("--final-s", type=float, default=0.9, help="a live final's model call")
    parser.add_argument("--partial-call-s", type=float, default=0.3, help="a live partial's model call")
    parser.add_argument("--background-s", type=float, default=1.3, help="a background segment's model call")
    parser.add_argument("--jitter", type=float, default=0.3, help="each call's time varies by up to this fraction")
    parser.add_argument("--onset-s", type=float, default=0.1, help="speech start seen this late")
    parser.add_argument("--silence-s", type=float, default=0.3, help="endpointing.silence_ms / 1000")
    parser.add_argument("--partial-s", type=float, default=0.8, help="inference.partial_interval_ms / 1000")
    parser.add_argument("--seeds", type=int, default=5, help="runs per hold, with different call times")
    args = parser.parse_args()
    spans = [(start / 16000, end / 16000) for start, end in compose(SCRIPT * args.loops).spans]
    print(f"{len(spans)} phrases; per seed: final p95 s beside a neighbour, its ratio to alone, background calls")
    print(f"{'hold s':>6} | " + " | ".join(f"seed {seed:<13}" for seed in range(args.seeds)))
    for hold_s in args.holds:
        cells = []
        for seed in range(args.seeds):
            alone = replay(spans, hold_s, False, args, seed)
            beside = replay(spans, hold_s, True, args, seed)
            cells.append(f"{beside['p95']:4.2f} {beside['p95'] / alone['p95']:4.2f} {beside['background']:>3}")
        print(f"{hold_s:>6g} | " + " | ".join(f"{c:<18}" for c in cells))


if __name__ == "__main__":
    main()

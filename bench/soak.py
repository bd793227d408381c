"""Soak run: N paced real-time streams for M minutes against a real server process, RSS sampled.

    .venv/bin/python bench/soak.py --streams 100 --minutes 10            # instant engine (server's own cost)
    .venv/bin/python bench/soak.py --streams 2 --minutes 5 --engine whisper

Each client streams the test script over and over on one connection (a lecture that never ends)
and, every few loops, reconnects (new stream, same load) so connection setup/teardown is soaked
too. Printed: RSS every 30 s, the least-squares RSS slope after a warm-up minute (a leak shows as
growth per hour), finals expected/received/duplicated, and the lag p95 of the whole run.
Bounded: the run stops after --minutes whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import websockets  # noqa: E402
from load import CHUNK_MS, SCRIPT, ServerProcess, histogram_quantiles  # noqa: E402

from tests.speech import compose, to_pcm16  # noqa: E402

LOOPS_PER_CONNECTION = 5


async def client(url: str, index: int, chunks: list[bytes], phrases: int, stop_at: float, tally: dict) -> None:
    await asyncio.sleep(index % 50 * 0.02)
    while time.monotonic() < stop_at:
        async with websockets.connect(url, subprotocols=["binary"], ping_interval=None, max_size=None) as ws:
            start = {
                "mode": "2pass",
                "wav_name": f"soak{index}",
                "audio_fs": 16000,
                "is_speaking": True,
                "extra_replies": True,
            }
            await ws.send(json.dumps(start))
            loops = 0

            async def send() -> None:
                nonlocal loops
                began, sent = time.monotonic(), 0
                while loops < LOOPS_PER_CONNECTION and time.monotonic() < stop_at:
                    for chunk in chunks:
                        await asyncio.sleep(max(0.0, began + sent * CHUNK_MS / 1000 - time.monotonic()))
                        await ws.send(chunk)
                        sent += 1
                    loops += 1
                await ws.send(json.dumps({"is_speaking": False}))

            sender = asyncio.create_task(send())
            seen: set[int] = set()
            async for raw in ws:
                reply = json.loads(raw)
                if reply.get("type") == "final":
                    tally["duplicates"] += reply["segment_id"] in seen
                    seen.add(reply["segment_id"])
                if reply.get("is_final"):
                    break
            await sender
            tally["expected"] += loops * phrases
            tally["received"] += len(seen)


def slope_mib_per_hour(samples: list[tuple[float, float]]) -> float:
    n = len(samples)
    if n < 2:
        return float("nan")
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    return sum((t - mean_t) * (r - mean_r) for t, r in samples) / var * 3600 if var else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="instant", choices=["instant", "whisper"])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--session-keep-s", type=float, default=None, help="override server.session_keep_s")
    args = parser.parse_args()
    script = compose(SCRIPT)
    pcm = to_pcm16(script.audio)
    step = 16000 * CHUNK_MS // 1000 * 2
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    extra = {"session_keep_s": str(args.session_keep_s)} if args.session_keep_s is not None else None
    server = ServerProcess(args.engine, 256, args.streams, extra)
    tally = {"expected": 0, "received": 0, "duplicates": 0}
    samples: list[tuple[float, float]] = []
    try:
        began = time.monotonic()
        stop_at = began + args.minutes * 60

        async def run() -> None:
            async def sample() -> None:
                while True:
                    elapsed = time.monotonic() - began
                    samples.append((elapsed, server.rss_mib()))
                    if len(samples) % 6 == 1:
                        print(f"  {elapsed / 60:5.1f} min  RSS {samples[-1][1]:7.1f} MiB", flush=True)
                    await asyncio.sleep(5)

            sampler = asyncio.create_task(sample())
            clients = [client(server.url, i, chunks, len(script.spans), stop_at, tally) for i in range(args.streams)]
            try:
                await asyncio.wait_for(asyncio.gather(*clients), args.minutes * 60 + 120)
            finally:
                sampler.cancel()

        asyncio.run(run())
        metrics = server.get("/metrics")
    finally:
        server.stop()
    warm = [(t, r) for t, r in samples if t >= 60] or samples
    lag95 = histogram_quantiles(metrics, "caption_stream_lag_seconds")[1] * 1000
    print(
        f"{args.engine} {args.streams} streams {args.minutes:g} min: RSS {warm[0][1]:.1f} -> {samples[-1][1]:.1f} MiB, "
        f"slope after 1 min {slope_mib_per_hour(warm):+.1f} MiB/h; finals expected {tally['expected']} "
        f"received {tally['received']} duplicated {tally['duplicates']}; lag p95 {lag95:.0f} ms"
    )


if __name__ == "__main__":
    main()

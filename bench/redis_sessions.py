"""What caption sessions shared through Redis cost, against the in-process SessionHub, side by side:

    .venv/bin/python bench/redis_sessions.py [--finals 2000] [--streams 1 100]

- publish: the event loop's CPU per final, in publish() (what a stream waits for: Redis writes are
  queued) and with the writer task's pipelines (same loop); and the time from a round of finals
  (one per stream) to all of them stored in Redis, at 1 and at 100 streams (their writes share
  pipelines)
- join: opening a stream into a named session (in process: a dict lookup; Redis: one read round
  trip plus a queued claim)
- Redis commands and bytes: commands per final (INFO commandstats) and memory per session holding
  50 finals (MEMORY USAGE of its two keys)

Redis is a throwaway redis-server on loopback (tests/redis_server.py); one on another host adds its
network round trip to join and to the time until stored, not to the publish cost. Prints numbers;
run on a quiet machine and compare within one run."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.redis_sessions import RedisSessions, finals_key, state_key  # noqa: E402
from server.sessions import SessionClient, SessionHub, SessionLimits  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def hub() -> SessionHub:
    return SessionHub(600, 1000, 4, 100, limits=SessionLimits())


def final(session_id: str, segment_id: int) -> dict:
    return {"type": "final", "mode": "2pass", "wav_name": "mic", "session_id": session_id,
            "segment_id": segment_id, "start_ms": segment_id * 3000, "end_ms": segment_id * 3000 + 2400,
            "text": "good morning everyone, please open the door", "final_text": "good morning everyone, "
            "please open the door", "end_reason": "silence", "timestamp": None, "is_final": False,
            "queue_ms": 3, "decode_ms": 180, "final_ms": 190}  # fmt: skip


async def publish_cost(store, streams: int, finals: int) -> tuple[float, float, float | None]:
    """(CPU µs per final in publish(), CPU µs per final in all (the Redis writer's pipelines run on
    the same loop), median ms from a round of finals to all of them stored in Redis)."""
    sessions = [await store.join(f"bench-{streams}-{i}", SessionClient()) for i in range(streams)]
    calls, total, stored = 0.0, 0.0, []
    rounds = max(1, finals // streams)
    for n in range(rounds):
        began = time.process_time()
        for session in sessions:
            store.publish(session, final(session.session_id, n))
        calls += time.process_time() - began
        if isinstance(store, RedisSessions):
            sent = time.perf_counter()
            await store.link.flushed()
            stored.append((time.perf_counter() - sent) * 1000)
        total += time.process_time() - began
    count = rounds * streams
    return calls / count * 1e6, total / count * 1e6, (statistics.median(stored) if stored else None)


async def join_cost(store, count: int) -> float:
    times = []
    for i in range(count):
        began = time.perf_counter()
        await store.join(f"join-{i % 50}", SessionClient())
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finals", type=int, default=2000)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100])
    args = parser.parse_args()
    redis_server = RedisServer().start()
    try:
        shared = RedisSessions(hub(), redis_server.url, 15, 100_000, 10, node="bench")
        await shared.start()
        local = hub()
        print(f"{'':34}{'in process':>14}{'Redis':>14}")
        for streams in args.streams:
            local_call, local_all, _ = await publish_cost(local, streams, args.finals)
            redis_call, redis_all, stored_ms = await publish_cost(shared, streams, args.finals)
            print(f"{streams:>3} streams: CPU/final, publish(){local_call:>10.1f} µs{redis_call:>11.1f} µs")
            print(f"{'':12}CPU/final, with writes{local_all:>9.1f} µs{redis_all:>11.1f} µs")
            print(f"{'':12}a round's finals stored{'':>14}{stored_ms:>11.2f} ms (median)")
        local_join, redis_join = await join_cost(local, 200), await join_cost(shared, 200)
        print(f"join (named session){'':14}{local_join:>11.3f} ms{redis_join:>11.3f} ms")
        client = shared.link._client  # the bench reads Redis's own figures through the same connection
        await client.config_resetstat()
        session = await shared.join("count-me", SessionClient())
        for n in range(100):
            shared.publish(session, final("count-me", n))
        await shared.link.flushed()
        stats = await client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
        per_final = {name: round(count / 100, 2) for name, count in calls.items() if count >= 100}
        print(f"Redis commands per final: {per_final} (pipelined: one round trip for many)")
        await client.delete(finals_key("count-me"))
        for n in range(50):
            shared.publish(session, final("count-me", n))
        await shared.link.flushed()
        used = sum(
            [await client.memory_usage(state_key("count-me")), await client.memory_usage(finals_key("count-me"))]
        )
        print(f"Redis memory, one session with 50 finals: {used} bytes ({used / 50:.0f} per final)")
        await shared.close()
    finally:
        redis_server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())

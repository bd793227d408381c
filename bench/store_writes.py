"""What one caption costs the history store, SQLite (embedded) against PostgreSQL, side by side:

    .venv/bin/python bench/store_writes.py [--segments 300] [--finals 300]

- a file segment: one commit_segment (the segment and its resume point, one transaction)
- a live final: add_live_finals with one final (the runner batches them: more finals per call
  while the database is slow), and in batches of 20
- a lease renewal (PostgreSQL's extra write per front end every lease_s/3, for all its files)
- a search for a Chinese phrase over everything written (trigram indexes: FTS5 / pg_trgm)

PostgreSQL is a throwaway server on loopback (tests/pg_server.py: fsync off, like a battery-backed
disk; a real one on another host adds its network round trip per transaction). Prints ms per call
and the database server's CPU is not counted; run it on a quiet machine and compare in one run."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.pg_store import PostgresStore  # noqa: E402
from jobs.store import Store  # noqa: E402
from tests.pg_server import PostgresServer, find_bin_dir  # noqa: E402

PHRASES = ["今天下午开会讨论项目进度", "good morning everyone", "please open the door", "明天上午继续讨论预算"]


def timed(call, count: int) -> float:
    """Median ms per call over `count` calls of call(i)."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(store, segments: int, finals: int) -> dict[str, float]:
    store.create_job([("talk.wav", "/uploads/talk.wav", "sha")], {})
    row = store.claim_file(())
    store.start_file(row.id, None, "whisper", "whisper-base")
    text = PHRASES
    results = {
        "segment commit": timed(
            lambda i: store.commit_segment(row.id, i, i * 1000, i * 1000 + 900, text[i % 4], i + 1.0), segments
        ),  # fmt: skip
        "live final (1 per call)": timed(
            lambda i: store.add_live_finals([("room", i, i * 1000, i * 1000 + 900, text[i % 4], "w", {}, "m", "o")]),
            finals,
        ),
        "live finals (20 per call)": timed(
            lambda i: store.add_live_finals(
                [(f"room-{i}", n, n * 1000, n * 1000 + 900, text[n % 4], "w", {}, "m", "o") for n in range(20)]
            ),
            max(1, finals // 20),
        ),
        "lease renewal (4 files)": timed(
            lambda i: store.renew_leases([row.id, row.id + 1, row.id + 2, row.id + 3]), finals
        ),  # fmt: skip
        "search '开会讨论'": timed(lambda i: store.search("开会讨论", limit=50), 20),
    }
    store.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--finals", type=int, default=300)
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        print("PostgreSQL binaries not found (./install.sh installs them)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        sqlite = measure(Store(Path(folder) / "captions.db"), args.segments, args.finals)
    server = PostgresServer(bin_dir)
    try:
        postgres = measure(PostgresStore(server.new_database()), args.segments, args.finals)
    finally:
        server.destroy()
    print(f"{'ms per call (median)':32} {'SQLite':>8} {'PostgreSQL':>11}")
    for name in sqlite:
        print(f"{name:32} {sqlite[name]:8.3f} {postgres[name]:11.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

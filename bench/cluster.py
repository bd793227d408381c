"""What cluster mode costs per final against the embedded mode, side by side in one run:

    .venv/bin/python bench/cluster.py [--streams 1 100] [--loops 4] [--repeat 1]

Each row is one bench/load.py run (a real run_server.py, paced real-time streams on loopback, the
`instant` engine so that recognition costs nothing): once embedded (sessions in the process,
history in SQLite) and once in cluster mode (cluster.redis_url and cluster.postgres_url: a
throwaway redis-server and PostgreSQL, tests/redis_server.py and tests/pg_server.py, on loopback;
a fresh database and an empty Redis for every run). The modes alternate at each stream count, so
a shared machine's noise falls on both. Reported per run:
- end of speech -> final caption p50/p95 (what a user sees) and srvS95, the server's own share on
  its clock (bench/load.py); the Redis and PostgreSQL writes are queued, not awaited by a final
- front-end CPU per final: the server process and its VAD worker, over the run, per final received
- services CPU per final: redis-server and PostgreSQL (postmaster and backends) over the same time
- finals expected / received / duplicated
Stream counts divide the same script; CPU per final at 1 stream is mostly the idle cost of a front
end spread over few finals. Run on a quiet machine and compare within one run."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import SCRIPT, one_run, with_children  # noqa: E402
from tests.pg_server import PostgresServer, find_bin_dir  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from tests.speech import compose  # noqa: E402


def postmaster_pid(postgres: PostgresServer) -> int:
    return int((postgres.data / "postmaster.pid").read_text().split()[0])


def run_mode(mode: str, count: int, script, redis: RedisServer, postgres: PostgresServer) -> dict:
    if mode == "embedded":
        return one_run("instant", 256, count, script)
    redis.flush()
    overrides = {"redis_url": f'"{redis.url}"', "postgres_url": f'"{postgres.new_database()}"'}

    def services() -> list[int]:
        assert redis.process is not None
        return [redis.process.pid, *with_children(postmaster_pid(postgres))]

    return one_run("instant", 256, count, script, overrides, services=services)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--loops", type=int, default=4, help="play the script this many times per stream")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode and stream count")
    args = parser.parse_args()
    bin_dir = find_bin_dir()
    if bin_dir is None or shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server and PostgreSQL's initdb/pg_ctl (./install.sh installs them)")
    script = compose(SCRIPT * args.loops)
    print(
        f"script {len(script.audio) / 16000:.1f} s, {len(script.spans)} finals per stream; engine instant; "
        "CPU in ms per final received (front end: server + VAD worker; services: redis-server + PostgreSQL)"
    )
    print(
        f"{'mode':>9} {'streams':>7} | {'final p50/p95 ms':>16} {'srvS95':>6} | "
        f"{'front cpu%':>10} {'front ms/final':>14} | {'services ms/final':>17} | finals exp/got/dup"
    )
    redis = RedisServer().start()
    postgres = PostgresServer(bin_dir)
    try:
        for count in args.streams:
            for _ in range(args.repeat):
                for mode in ("embedded", "cluster"):
                    r = run_mode(mode, count, script, redis, postgres)
                    got = max(1, r["finals"][1])
                    services = f"{r['services_cpu_s'] * 1000 / got:>17.2f}" if mode == "cluster" else f"{'-':>17}"
                    print(
                        f"{mode:>9} {count:>7} | {r['latency_ms'][0]:>7.0f}/{r['latency_ms'][1]:<8.0f} "
                        f"{r['server_clock_p95']:>6.0f} | {r['cpu']:>10.1f} {r['cpu_s'] * 1000 / got:>14.2f} | "
                        f"{services} | {'/'.join(map(str, r['finals']))}",
                        flush=True,
                    )
    finally:
        redis.cleanup()
        postgres.destroy()


if __name__ == "__main__":
    main()

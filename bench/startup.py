"""How long run_server.py takes from launch until /healthz answers, for one or more checkouts, in
turns in one run (so both see the same machine).

    .venv/bin/python bench/startup.py                       # this checkout, 3 starts
    .venv/bin/python bench/startup.py --runs 5 /tmp/before  # this checkout and another, alternating

Each start is the default config (embedded Whisper, FSMN VAD worker, SQLite in a fresh folder) on
a free loopback port; the server is stopped with SIGTERM after its first /healthz answer. Another
checkout runs with its own run_server.py and the Python of its own .venv.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seconds_to_health(checkout: Path) -> float:
    """One start of `checkout`'s server on the default config, until /healthz answers."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="livecaption-startup-") as data:
        text = (checkout / "config.toml").read_text()
        text = re.sub(r"^db_path = .*$", f'db_path = "{data}/captions.db"', text, count=1, flags=re.M)
        text = re.sub(r"^upload_dir = .*$", f'upload_dir = "{data}/uploads"', text, count=1, flags=re.M)
        config = Path(data) / "config.toml"
        config.write_text(text)
        python = checkout / ".venv" / "bin" / "python"
        started = time.monotonic()
        server = subprocess.Popen(
            [str(python), "run_server.py", "--config", str(config), "--port", str(port)],
            cwd=checkout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"{checkout}: the server exited with {server.returncode}")
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                    return time.monotonic() - started
                except OSError:
                    time.sleep(0.05)
        finally:
            server.terminate()
            server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("others", nargs="*", type=Path, help="other checkouts to compare, each with its .venv")
    parser.add_argument("--runs", type=int, default=3, help="starts per checkout (default 3)")
    args = parser.parse_args()
    checkouts = [HERE, *(path.resolve() for path in args.others)]
    times: dict[Path, list[float]] = {checkout: [] for checkout in checkouts}
    for _ in range(args.runs):
        for checkout in checkouts:  # in turns: a machine that gets busier slows all alike
            times[checkout].append(seconds_to_health(checkout))
    print(f"{'checkout':40} | start to /healthz, s (each run)        | median")
    for checkout, seconds in times.items():
        runs = " ".join(f"{s:5.2f}" for s in seconds)
        print(f"{str(checkout):40} | {runs:38} | {statistics.median(seconds):5.2f}")


if __name__ == "__main__":
    sys.exit(main())

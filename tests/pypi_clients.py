"""Run the FunASR client packages from PyPI against a server, each in its own process.

Both packages install the same import name (`funasr_client`), so install.sh puts each in its own
folder under .venv/third-party (pip --target, no dependencies: those are test extras of this
project) and a test runs it with that folder on PYTHONPATH. Known bugs of theirs, not ours, that
the drivers step around: funasr-client 0.1.6's sync close() takes its own lock twice and hangs
against any server (its async functions are used); funasr-python 0.1.5's console script points at
a coroutine (it is run as `python -m funasr_client.cli`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THIRD_PARTY = ROOT / ".venv" / "third-party"
FUNASR_CLIENT = THIRD_PARTY / "funasr-client"  # funasr-client 0.1.6 (Atomie Chen)
FUNASR_PYTHON = THIRD_PARTY / "funasr-python"  # funasr-python 0.1.5 ("FunASR Team")

# funasr-client: its documented async API, printing what it returned as JSON.
_FUNASR_CLIENT_DRIVER = """
import asyncio, json, sys
import funasr_client
from funasr_client import async_file_asr_stream, merge_messages

uri, path, mode, hotwords = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])

async def main():
    messages = [m async for m in async_file_asr_stream(path, uri, mode=mode, hotwords=hotwords or None)]
    merged = merge_messages(messages)  # what its async_file_asr returns for the same stream
    print(json.dumps({"version": funasr_client.__version__ if hasattr(funasr_client, "__version__") else "",
                      "messages": messages, "merged": merged}, ensure_ascii=False))

asyncio.run(asyncio.wait_for(main(), 240))
"""


def _env(folder: Path) -> dict[str, str]:
    if not (folder / "funasr_client").is_dir():
        raise RuntimeError(f"{folder} is missing: run ./install.sh (it installs the FunASR PyPI clients there)")
    return {**os.environ, "PYTHONPATH": str(folder), "PYTHONIOENCODING": "utf-8"}


def run_funasr_client(url: str, path: Path, mode: str, hotwords: dict[str, int] | None = None) -> dict:
    """funasr-client 0.1.6: every message of async_file_asr_stream, and their merge by its own
    merge_messages (exactly what its async_file_asr returns; one stream instead of two)."""
    run = run_funasr_client_process(url, path, mode, hotwords)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def run_funasr_client_process(
    url: str, path: Path, mode: str, hotwords: dict[str, int] | None = None
) -> subprocess.CompletedProcess:
    """The same run, as it ended (a client that hangs fails the test by its driver's time limit)."""
    return subprocess.run(
        [sys.executable, "-c", _FUNASR_CLIENT_DRIVER, url, str(path), mode, json.dumps(hotwords or {})],
        env=_env(FUNASR_CLIENT),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_funasr_python_cli(url: str, path: Path, mode: str, out: Path, sample_rate: int | None = None) -> dict:
    """funasr-python 0.1.5's own command line: `recognize FILE --streaming -o out.json`."""
    command = [sys.executable, "-m", "funasr_client.cli", "--server", url, "--mode", mode, "--quiet"]
    command += ["--timeout", "120"]
    if sample_rate:
        command += ["--sample-rate", str(sample_rate)]
    command += ["--output", str(out), "recognize", str(path), "--streaming"]
    run = subprocess.run(command, env=_env(FUNASR_PYTHON), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    return json.loads(out.read_text())["results"][0]

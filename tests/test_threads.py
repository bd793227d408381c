"""numpy's BLAS keeps to one thread in the server process (inference/threads.py), unless the
operator set its thread count."""

import json
import os
import subprocess
import sys
from pathlib import Path

from threadpoolctl import threadpool_info

from inference.threads import BLAS_THREADS_ENV

ROOT = Path(__file__).resolve().parent.parent

# run_server's main as the first thing a process runs; it stops at the missing config file (exit 2),
# after the thread setting. Then numpy loads, as the server's imports would load it.
PROBE = """
import json, sys
import run_server
before = "numpy" in sys.modules
code = run_server.main(["--config", sys.argv[1]])
import numpy
from threadpoolctl import threadpool_info
blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
print(json.dumps({"numpy_loaded_before_main": before, "exit": code, "blas_threads": blas}))
"""


# Every variable OpenBLAS takes its thread count from. The probe starts without them, as a server
# started by hand would: tests/conftest.py sets OMP_NUM_THREADS=1 for this process and its children,
# and OpenBLAS falls back to it, so inherited it would give one thread whatever run_server did.
OPENBLAS_THREAD_VARIABLES = (BLAS_THREADS_ENV, "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def run_server_blas_threads(tmp_path: Path, **environment: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_THREAD_VARIABLES} | environment
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "missing.toml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_run_server_gives_numpy_one_blas_thread_before_numpy_loads(tmp_path):
    assert (os.cpu_count() or 1) > 1, "on one core a BLAS pool has one thread anyway: nothing to tell apart"
    assert run_server_blas_threads(tmp_path) == {"numpy_loaded_before_main": False, "exit": 2, "blas_threads": [1]}


def test_an_operators_own_blas_thread_count_is_kept(tmp_path):
    assert run_server_blas_threads(tmp_path, **{BLAS_THREADS_ENV: "2"})["blas_threads"] == [2]


def test_the_test_processes_numpy_has_one_blas_thread_as_the_servers_does():
    # tests/conftest.py sets it before anything loads numpy; the in-process servers run here. (A
    # second OpenBLAS, scipy's, loads once a test has imported scikit-learn through funasr.)
    threads = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert threads and set(threads) == {1}, threads

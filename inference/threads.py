"""One BLAS thread for the server process's numpy, set before numpy loads.

The matrix products numpy runs in the server process are small: Whisper's mel filters per decode,
fbank and FSMN when `inference.vad_process` is off. OpenBLAS (numpy's BLAS) starts a thread per core
and, after each product, its idle threads spin on sched_yield waiting for the next, taking a core
from the decoders. The VAD worker already keeps to one BLAS thread for the same reason
(inference/vad_process.py). Measured on 2 cores (docs/performance.md, "One BLAS thread"): one
Whisper stream's server used 67% of a core instead of 99% and its final p50 went 1178 -> 931 ms;
the test suite, whose servers run in its own processes, took 252-265 s instead of 288 s.

OpenBLAS reads the setting once, when numpy loads it: `one_blas_thread` must run before anything
imports numpy (run_server.py does it first). Child processes (the VAD worker, Ray's workers)
inherit it through the environment. An operator's own OPENBLAS_NUM_THREADS is kept.
"""

from __future__ import annotations

import os

BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"


def one_blas_thread() -> None:
    os.environ.setdefault(BLAS_THREADS_ENV, "1")

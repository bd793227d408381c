"""Keep the memory a CPU decode frees for the next decode, instead of handing it back to the kernel.

A Whisper decode on the CPU (CTranslate2) allocates and frees buffers of up to ~70 MB per encoder
layer (a 30 s window's attention scores are 8 x 1500 x 1500 floats). glibc serves blocks that large
with mmap and unmaps them on free, and a thread other than the main one gets its own arena, whose
heaps are trimmed as they empty; so every decode faulted its buffers in again, page by page. With
one arena (the main thread's, which grows with brk), no mmap for large blocks and no trimming, the
next decode finds its memory mapped already. bench/allocator.py, 4 s pieces of the real recordings
on 2 cores: 163,295 page faults per decode -> 72, kernel time 8.2 -> 0.8 s, decode p50 0.750 ->
0.496 s, peak resident size 326 -> 359 MB.

The price: the server's resident size stays at its decodes' peak instead of falling back after each
(bench/soak.py, 2 Whisper streams for 5 min: a flat 779 MiB, against 410-650 MiB moving with the
decodes). So they are applied only where they pay (`pays_here`); `inference.keep_decode_memory =
false` keeps glibc's defaults everywhere.

glibc reads these settings when a thread first allocates: `reuse_freed_memory` must run before any
thread but the main one has started (run_server.py: before the server's imports). Processes started
by others (Ray workers) get the same settings through their environment: `MALLOC_ENV`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from settings.config import InferenceConfig

# mallopt() parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

# What freed memory above the heap's last block may stay mapped before glibc returns it: more than a
# decode's working set, so the buffers of the next one are already there.
TRIM_THRESHOLD_BYTES = 1 << 30

# The same settings as environment variables, for processes this one starts (glibc reads them there).
MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
}


def pays_here(inference: InferenceConfig) -> bool:
    """Whether this process decodes where the settings were measured to pay: the Whisper engine
    (CTranslate2) on this machine's CPU (`inference.keep_decode_memory` on). Elsewhere they were not
    measured to help, and a front end serving hundreds of streams pays for them: with the instant
    engine at 300 streams its lag p95 went from 100-250 ms to 350-400 ms (bench/load.py, twice each)."""
    if not _whisper_keeps_decode_memory(inference) or inference.backend != "local":
        return False
    if inference.device == "auto":
        from inference.devices import cuda_device_count  # (CTranslate2's count: it starts no thread)

        return cuda_device_count("whisper") == 0
    return inference.device == "cpu"


def pays_in_ray_replicas(inference: InferenceConfig) -> bool:
    """The same for the replicas of a Ray pool (backend "ray"): Whisper on their CPU (no GPUs)."""
    return _whisper_keeps_decode_memory(inference) and inference.ray_num_gpus == 0


def _whisper_keeps_decode_memory(inference: InferenceConfig) -> bool:
    return inference.keep_decode_memory and inference.engine == "whisper"


def operator_chose_malloc_settings(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment already tunes glibc's malloc: then it is left as the operator set it."""
    return "GLIBC_TUNABLES" in environ or any(name.startswith("MALLOC_") for name in environ)


def reuse_freed_memory() -> bool:
    """Apply the settings above to this process (glibc only). Returns whether they were applied: not
    on another C library, nor where the environment already sets malloc tunables of its own."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or operator_chose_malloc_settings():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)

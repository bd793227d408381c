"""inference/allocator.py: with glibc's settings applied, memory a thread frees is mapped already when
it allocates again (no page faults), as a Whisper decode needs; without them every large block is
faulted in anew. Measured in fresh processes: glibc takes the settings before a second thread starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from inference.allocator import MALLOC_ENV, operator_chose_malloc_settings, pays_here
from settings.config import DEFAULT_CONFIG_PATH
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[1]

# A decode's largest buffer: a 30 s window's attention scores (8 heads x 1500 x 1500 float32).
PROBE = """
import ctypes, json, resource, sys, threading
from inference.allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "apply" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 8 * 1500 * 1500 * 4

def block():  # allocated, written through (as a GEMM writes its output), freed: CTranslate2's way
    address = libc.malloc(SIZE)
    ctypes.memset(address, 1, SIZE)
    libc.free(address)

faults = []
def decode_like():
    block()  # the first allocation maps the memory; a heap that keeps it needs no more
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(3):
        block()
    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=decode_like)
thread.start()
thread.join()
print(json.dumps({"applied": applied, "faults": faults[0]}))
"""

PAGES_PER_BLOCK = 8 * 1500 * 1500 * 4 // 4096


def without_malloc_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not operator_chose_malloc_settings({k: v})}


def probe(mode: str, **env: str) -> dict:
    clean = without_malloc_settings()
    run = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings")
def test_freed_blocks_are_reused_without_page_faults_once_applied():
    kept = probe("apply")
    default = probe("leave")
    assert kept["applied"] and not default["applied"]
    # Without: each 72 MB block is mapped and faulted in page by page (3 x 17,578 pages).
    assert default["faults"] > 2 * PAGES_PER_BLOCK, default
    # With: the heap already holds it.
    assert kept["faults"] < PAGES_PER_BLOCK // 10, kept


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings")
def test_malloc_settings_of_the_operator_are_left_alone():
    chosen = probe("apply", MALLOC_ARENA_MAX="4")
    assert not chosen["applied"]
    assert chosen["faults"] > 2 * PAGES_PER_BLOCK, chosen  # glibc's defaults, as the operator asked
    assert operator_chose_malloc_settings({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert not operator_chose_malloc_settings({"PATH": "/usr/bin"})


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings")
def test_the_environment_form_has_the_same_effect_in_a_process_started_with_it():
    # What Ray's workers get (inference/ray_backend.py): glibc reads MALLOC_ENV at their start.
    started = probe("leave", **MALLOC_ENV)
    assert started["faults"] < PAGES_PER_BLOCK // 10, started


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc settings")
def test_run_server_applies_them_for_whisper_on_the_cpu_unless_keep_decode_memory_is_false(tmp_path):
    # Each server stops where it would listen (the port is taken), after the allocator step and its log line.
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    runs = {}
    for keep in ("true", "false"):
        path = tmp_path / f"keep-{keep}.toml"
        text = DEFAULT_CONFIG_PATH.read_text()
        assert "keep_decode_memory = true" in text
        path.write_text(text.replace("keep_decode_memory = true", f"keep_decode_memory = {keep}"))
        command = ["run_server.py", "--config", str(path), "--device", "cpu", "--port", str(taken.getsockname()[1])]
        runs[keep] = subprocess.Popen(
            [sys.executable, *command], cwd=ROOT, env=without_malloc_settings(), stderr=subprocess.PIPE, text=True
        )
    try:
        logs = {keep: run.communicate(timeout=120)[1] for keep, run in runs.items()}
    finally:
        taken.close()
    assert all(run.returncode == 1 for run in runs.values()), logs
    assert "memory: decode buffers are kept for reuse" in logs["true"]
    assert "memory: decode buffers" not in logs["false"]


@pytest.mark.parametrize(
    ("settings", "applied"),
    [
        ({"device": "cpu"}, True),
        ({"device": "auto"}, True),  # (no CUDA device here: CTranslate2 counts none)
        ({"device": "cpu", "keep_decode_memory": False}, False),
        ({"device": "cuda:0"}, False),  # GPU decodes: the host never held their buffers
        ({"device": "cpu", "engine": "instant"}, False),  # a front end of many streams, no model: it would only pay
        ({"device": "cpu", "engine": "funasr"}, False),  # torch: not measured
        ({"device": "cpu", "backend": "ray"}, False),  # the replicas decode (below), not the front end
    ],
)
def test_they_are_applied_where_a_whisper_decode_runs_on_this_cpu(settings, applied):
    assert pays_here(make_config(inference=settings).inference) is applied


def test_ray_replicas_get_them_when_they_decode_whisper_on_their_cpu():
    from inference.ray_backend import PoolSettings

    def replicas_keep(**settings) -> bool:
        return PoolSettings.from_config(make_config(inference=settings)).replicas_keep_decode_memory

    assert replicas_keep(backend="ray", ray_num_gpus=0.0)
    assert not replicas_keep(backend="ray", ray_num_gpus=1.0)
    assert not replicas_keep(backend="ray", engine="funasr")
    assert not replicas_keep(backend="ray", keep_decode_memory=False)

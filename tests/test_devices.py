"""Device resolution. No GPU exists here: CUDA/MPS availability is simulated by patching torch and
CTranslate2 (named stand-ins for a GPU machine; nothing here ran on a real GPU)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ctranslate2
import pytest
import torch

from inference.devices import DeviceUnavailable, is_out_of_memory, load_pip_cublas, resolve_device

ROOT = Path(__file__).resolve().parent.parent


def simulate(monkeypatch, cuda: int, mps: bool, ct2_cuda: int | None = None):
    """torch sees `cuda` GPUs; CTranslate2 sees `ct2_cuda` (the same number unless told)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: cuda if ct2_cuda is None else ct2_cuda)


@pytest.mark.parametrize("cuda, mps, expected", [(2, True, "cuda:0"), (0, True, "mps"), (0, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    simulate(monkeypatch, cuda, mps)
    assert resolve_device("auto") == expected


def test_explicit_devices_are_checked(monkeypatch):
    simulate(monkeypatch, 2, False)
    assert resolve_device("cuda") == "cuda:0" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(DeviceUnavailable, match="only 2 CUDA device"):
        resolve_device("cuda:5")
    with pytest.raises(DeviceUnavailable, match="MPS is not available"):
        resolve_device("mps")
    assert resolve_device("cpu") == "cpu"


def test_whisper_asks_ctranslate2_so_a_cpu_only_torch_still_gets_the_gpu(monkeypatch):
    # The default install: torch's CPU build (sees no GPU) beside CTranslate2's CUDA-enabled wheel.
    simulate(monkeypatch, cuda=0, mps=False, ct2_cuda=2)
    assert resolve_device("auto", "whisper") == "cuda:0"
    assert resolve_device("cuda:1", "whisper") == "cuda:1"
    assert resolve_device("auto", "funasr") == "cpu"
    with pytest.raises(DeviceUnavailable, match="for engine funasr but torch sees no CUDA device"):
        resolve_device("cuda:0", "funasr")
    with pytest.raises(DeviceUnavailable, match="for engine whisper but CTranslate2 sees only 2 CUDA device"):
        resolve_device("cuda:2", "whisper")


def test_funasr_asks_torch_and_whisper_never_gets_mps(monkeypatch):
    simulate(monkeypatch, cuda=1, mps=True, ct2_cuda=0)  # e.g. a CTranslate2 without its CUDA runtime
    assert resolve_device("cuda", "funasr") == "cuda:0"
    assert resolve_device("auto", "whisper") == "cpu"
    with pytest.raises(DeviceUnavailable, match="whisper but CTranslate2 sees no CUDA device"):
        resolve_device("cuda:0", "whisper")
    simulate(monkeypatch, cuda=0, mps=True)
    assert resolve_device("auto", "funasr") == "mps" and resolve_device("auto", "whisper") == "cpu"
    with pytest.raises(DeviceUnavailable, match="CTranslate2 has no MPS backend"):
        resolve_device("mps", "whisper")
    assert resolve_device("cpu", "whisper") == "cpu" and resolve_device("cuda:3", "instant") == "cpu"


def test_a_missing_device_is_one_line(monkeypatch):
    simulate(monkeypatch, cuda=0, mps=False, ct2_cuda=0)
    for engine in ("whisper", "funasr"):
        with pytest.raises(DeviceUnavailable) as caught:
            resolve_device("cuda:1", engine)
        assert "\n" not in str(caught.value) and engine in str(caught.value)


def test_the_server_resolves_each_engine_on_its_own_runtime(monkeypatch):
    # Live engine whisper, files also on funasr; torch CPU-only, CTranslate2 sees one GPU.
    import asyncio

    from inference.engines.instant import InstantEngine
    from inference.model_hub import ModelUnavailable
    from server.app import CaptionServer
    from tests.conftest import make_config

    simulate(monkeypatch, cuda=0, mps=False, ct2_cuda=1)
    asked = []

    class Loaded(Exception):
        pass

    def fake_create(config, device, name=None, streaming=True):
        asked.append((name or config.inference.engine, device))
        if not streaming:  # the files-only engine: enough, stop before the rest of startup
            raise Loaded
        return InstantEngine()

    monkeypatch.setattr("inference.loading.create_engine", fake_create)
    config = make_config(inference={"engine": "whisper", "device": "auto"}, jobs={"engines": ["funasr"]})
    with pytest.raises(ModelUnavailable, match="jobs.engines lists 'funasr'") as caught:
        asyncio.run(CaptionServer(config).startup())
    assert isinstance(caught.value.__cause__, Loaded)
    assert asked == [("whisper", "cuda:0"), ("funasr", "cpu")]


def test_out_of_memory_is_recognised_from_torch_and_ctranslate2_messages():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_clearing_the_cache_on_cpu_is_a_clear_no_op():
    from inference.devices import clear_cache

    report = clear_cache("cpu")
    assert report["cleared"] is False and "no CUDA cache" in report["message"]


def test_clearing_the_cuda_cache_reports_memory_before_and_after(monkeypatch):
    # Simulated GPU (none here): a caching allocator holding 3 GiB, of which empty_cache frees 2 GiB.
    from inference.devices import clear_cache

    reserved = {"bytes": 3 << 30}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 << 30)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved["bytes"])
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: reserved.update(bytes=1 << 30))
    report = clear_cache("cuda:0")
    assert report["cleared"] is True
    assert report["before"] == {"allocated_bytes": 1 << 30, "reserved_bytes": 3 << 30}
    assert report["after"]["reserved_bytes"] == 1 << 30 and report["released_bytes"] == 2 << 30


def test_cublas_from_its_pip_package_is_found_by_name_without_ld_library_path(tmp_path):
    """CTranslate2 asks the loader for libcublas.so.12 by name; the nvidia-cublas-cu12 package keeps it in
    a folder the loader does not search. A stand-in library with that soname (built here: there is no GPU,
    and no real cuBLAS) in such a package folder is loaded by name once load_pip_cublas has run."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler to build the stand-in library")
    lib_dir = tmp_path / "site" / "nvidia" / "cublas" / "lib"
    lib_dir.mkdir(parents=True)
    source = tmp_path / "standin.c"
    source.write_text("int cublas_standin_version(void) { return 12; }\n")
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-Wl,-soname,libcublas.so.12", "-o", lib_dir / "libcublas.so.12", source],
        check=True,
    )
    probe = """
import ctypes
from inference.devices import load_pip_cublas
try:
    ctypes.CDLL("libcublas.so.12")
    print("found before")
except OSError:
    print("not found before")
print("loaded", load_pip_cublas())
print("by name", ctypes.CDLL("libcublas.so.12").cublas_standin_version())
"""
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}"}
    env.pop("LD_LIBRARY_PATH", None)
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "not found before",
        f"loaded {lib_dir / 'libcublas.so.12'}",
        "by name 12",
    ]


def test_without_the_cublas_package_nothing_is_loaded(tmp_path, monkeypatch):
    (tmp_path / "nvidia" / "cudnn" / "lib").mkdir(parents=True)  # another nvidia-* package, no cuBLAS
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + [p for p in sys.path if "site-packages" not in p])
    for name in [m for m in sys.modules if m == "nvidia" or m.startswith("nvidia.")]:
        monkeypatch.delitem(sys.modules, name)

    assert load_pip_cublas() is None

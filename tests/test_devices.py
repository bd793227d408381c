"""Device resolution. No GPU exists here: CUDA/MPS availability is simulated by patching torch and
CTranslate2 (named stand-ins for a GPU machine; nothing here ran on a real GPU)."""

import ctranslate2
import pytest
import torch

from inference.devices import DeviceUnavailable, is_out_of_memory, resolve_device


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

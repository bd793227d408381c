"""Device resolution. No GPU exists here: CUDA/MPS availability is simulated by patching torch."""

import pytest
import torch

from inference.devices import DeviceUnavailable, is_out_of_memory, resolve_device


def simulate(monkeypatch, cuda: int, mps: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


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

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

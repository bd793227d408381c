"""Resolve the configured device: auto tries CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(requested: str) -> str:
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if requested == "auto":
        device = "cuda:0" if cuda else "mps" if mps else "cpu"
        log.info("device auto -> %s", device)
        return device
    if requested.startswith("cuda"):
        if not cuda:
            raise DeviceUnavailable(f"device {requested!r} requested but CUDA is not available here")
        index = int(requested.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return f"cuda:{index}"
    if requested == "mps" and not mps:
        raise DeviceUnavailable("device 'mps' requested but Apple MPS is not available here")
    return requested


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors from torch or CTranslate2 (both say so in the message)."""
    return "out of memory" in str(exc).lower()


def clear_cache(device: str) -> dict:
    """Give cached, unused CUDA memory back to the driver; report memory before and after.

    Only torch's caching allocator is affected (FunASR models); CTranslate2 (Whisper) keeps its own."""
    if not device.startswith("cuda"):
        return {"device": device, "cleared": False, "message": f"device is {device}: no CUDA cache to clear"}
    import gc

    import torch

    def usage() -> dict:
        return {
            "allocated_bytes": int(torch.cuda.memory_allocated(device)),
            "reserved_bytes": int(torch.cuda.memory_reserved(device)),
        }

    before = usage()
    gc.collect()  # tensors only garbage holds on to are freed first, so their blocks can be released
    torch.cuda.empty_cache()
    after = usage()
    return {
        "device": device,
        "cleared": True,
        "before": before,
        "after": after,
        "released_bytes": before["reserved_bytes"] - after["reserved_bytes"],
    }

"""Resolve the configured device: auto tries CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    pass


def cuda_device_count(engine: str) -> int:
    """CUDA devices the engine's own runtime sees: CTranslate2's count for Whisper (its wheels ship
    their own CUDA support, so a CPU-only torch does not hide the GPU from it), torch's for the rest."""
    if engine == "whisper":
        import ctranslate2

        try:
            return int(ctranslate2.get_cuda_device_count())
        except Exception:  # no driver / no CUDA runtime: CTranslate2 sees no GPU
            return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def load_pip_cublas(soname: str = "libcublas.so.12") -> str | None:
    """CTranslate2's wheels (Whisper) load cuBLAS 12 by name when a model first runs on CUDA.
    `./install.sh --cuda` installs it as the nvidia-cublas-cu12 package, whose folder is not on the
    loader's search path: loaded once by its full path, the later load by name finds it already in
    the process, with no LD_LIBRARY_PATH. Returns the path loaded, or None when the package is not
    installed (the system's cuBLAS, if any, is used)."""
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        library = Path(root, "cublas", "lib", soname)
        if library.is_file():
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            return str(library)
    return None


def resolve_device(requested: str, engine: str = "funasr") -> str:
    """The device `engine` runs on for the configured `requested` (auto | cpu | cuda | cuda:N | mps).
    auto: the first CUDA device the engine's runtime sees, else Apple MPS (torch engines only), else
    the CPU. A device that does not exist for this engine is DeviceUnavailable, one line naming both."""
    if engine == "instant":
        return "cpu"  # no model, no device
    torch_engine = engine != "whisper"
    runtime = "torch" if torch_engine else "CTranslate2"
    count = cuda_device_count(engine)
    mps = torch_engine and _mps_available()
    if requested == "auto":
        device = "cuda:0" if count else "mps" if mps else "cpu"
        log.info("device auto -> %s for engine %s", device, engine)
        return device
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if count == 0:
            raise DeviceUnavailable(
                f"device {requested!r} requested for engine {engine} but {runtime} sees no CUDA device here"
                + (
                    " (install.sh --cuda installs a CUDA build of torch)"
                    if torch_engine
                    else " (needs an NVIDIA driver and the CUDA 12 runtime CTranslate2 expects)"
                )
            )
        if index >= count:
            raise DeviceUnavailable(
                f"device {requested!r} requested for engine {engine} but {runtime} sees only {count} CUDA device(s)"
            )
        return f"cuda:{index}"
    if requested == "mps" and not mps:
        why = "CTranslate2 has no MPS backend" if not torch_engine else "Apple MPS is not available here"
        raise DeviceUnavailable(f"device 'mps' requested for engine {engine} but {why}")
    return requested


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors from torch or CTranslate2 (both say so in the message)."""
    return "out of memory" in str(exc).lower()


def clear_cache(device: str) -> dict[str, Any]:
    """Give cached, unused CUDA memory back to the driver; report memory before and after.

    Only torch's caching allocator is affected (FunASR models); CTranslate2 (Whisper) keeps its own."""
    if not device.startswith("cuda"):
        return {"device": device, "cleared": False, "message": f"device is {device}: no CUDA cache to clear"}
    import gc

    import torch

    def usage() -> dict[str, Any]:
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


# --- what the admin page shows and clears, per engine ---------------------------------------------
RUNTIME = {"whisper": "CTranslate2", "funasr": "torch"}  # which runtime holds each engine's weights


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def inventory() -> list[dict[str, Any]]:
    """The devices here: the CPU, then every CUDA device torch or CTranslate2 sees, with memory
    (total, free, torch's allocated/reserved) where torch can tell; CTranslate2 reports no memory."""
    import torch

    devices: list[dict[str, Any]] = [{"id": "cpu", "name": "CPU", "seen_by": ["torch", "CTranslate2"], "memory": None}]
    torch_count = cuda_device_count("funasr")
    ct2_count = cuda_device_count("whisper")
    for index in range(max(torch_count, ct2_count)):
        seen_by = [name for name, count in (("torch", torch_count), ("CTranslate2", ct2_count)) if index < count]
        entry: dict[str, Any] = {"id": f"cuda:{index}", "name": None, "seen_by": seen_by, "memory": None}
        if index < torch_count:
            entry["name"] = torch.cuda.get_device_name(index)
            free, total = torch.cuda.mem_get_info(index)
            entry["memory"] = {
                "total_bytes": int(total),
                "free_bytes": int(free),
                "torch_allocated_bytes": int(torch.cuda.memory_allocated(index)),
                "torch_reserved_bytes": int(torch.cuda.memory_reserved(index)),
            }
        devices.append(entry)
    return devices


def engine_memory(engine: str, device: str) -> dict[str, Any]:
    """What one engine holds on its device: torch's allocated/reserved bytes for a torch engine on
    CUDA (shared by every torch engine on that device), a plain "CPU" otherwise."""
    if not device.startswith("cuda"):
        return {"where": "CPU", "note": "weights in main memory"}
    if RUNTIME.get(engine) == "torch" and _torch_cuda():
        import torch

        return {
            "where": device,
            "allocated_bytes": int(torch.cuda.memory_allocated(device)),
            "reserved_bytes": int(torch.cuda.memory_reserved(device)),
            "note": "torch's allocator on this device (shared by every torch engine there)",
        }
    return {"where": device, "note": "CTranslate2 keeps its own allocator and does not report its memory"}


def clear_engine_cache(engine: str, device: str) -> dict[str, Any]:
    """Clear what can be cleared for one engine, and say honestly what was freed: torch's cached
    blocks for a torch engine on CUDA; nothing for Whisper, whose CTranslate2 allocator has no call
    to empty it (its weights stay loaded: unloading them would stop decoding)."""
    runtime = RUNTIME.get(engine, "none")
    if RUNTIME.get(engine) == "torch" or not device.startswith("cuda"):
        return {"engine": engine, "runtime": runtime, **clear_cache(device)}
    return {
        "engine": engine,
        "runtime": runtime,
        "device": device,
        "cleared": False,
        "message": "CTranslate2 keeps its own CUDA allocator and offers no call to empty it: nothing freed",
    }

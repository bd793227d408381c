"""What the server's device code sees on a real GPU machine: device selection per engine, the admin
page's inventory and per-engine memory, clearing torch's cache, and a real CUDA out-of-memory error.

    python3 bench/gpu_check.py            # on a machine with an NVIDIA GPU and a CUDA build of torch

It needs only torch (and ctranslate2 for the Whisper lines; without it they say so). It prints what
it finds; nothing is asserted. The development machines have no GPU: this is how the CUDA paths
that the tests cover with CUDA patched in (tests/test_devices.py) were checked for real.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import devices  # noqa: E402


def show(label: str, value: object) -> None:
    print(f"{label:<44} {json.dumps(value, default=str) if not isinstance(value, str) else value}")


def attempt(label: str, call: Callable[[], object]) -> None:
    try:
        show(label, call())
    except Exception as exc:  # what a user would see, in one line
        show(label, f"{type(exc).__name__}: {exc}")


def main() -> None:
    import torch

    show("torch", f"{torch.__version__}, CUDA build {torch.version.cuda}, available {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        show("device 0", torch.cuda.get_device_name(0))
    for engine in ("funasr", "whisper"):
        for requested in ("auto", "cuda", "cuda:0", "cuda:7", "cpu", "mps"):
            label = f"resolve_device({requested!r}, {engine!r})"
            attempt(label, lambda r=requested, e=engine: devices.resolve_device(r, e))
    try:
        import ctranslate2

        show("ctranslate2", ctranslate2.__version__)
        attempt("ctranslate2 compute types on cuda", lambda: sorted(ctranslate2.get_supported_compute_types("cuda")))
    except ImportError as exc:
        show("ctranslate2", f"not installed ({exc})")
    attempt("inventory()", devices.inventory)
    if not torch.cuda.is_available():
        return

    # The admin page's per-engine memory and its "clear GPU cache" action, on real allocations.
    block = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda:0")
    show("engine_memory(funasr) with 2 GiB held", devices.engine_memory("funasr", "cuda:0"))
    del block
    show("engine_memory(funasr) after del", devices.engine_memory("funasr", "cuda:0"))
    show("clear_engine_cache(funasr)", devices.clear_engine_cache("funasr", "cuda:0"))
    show("clear_engine_cache(whisper)", devices.clear_engine_cache("whisper", "cuda:0"))

    # A real out-of-memory error: the executor splits a batch (or falls back to the CPU) on these.
    try:
        torch.empty(1 << 50, dtype=torch.uint8, device="cuda:0")
    except Exception as exc:
        show("is_out_of_memory(real CUDA OOM)", f"{devices.is_out_of_memory(exc)} ({type(exc).__name__})")


if __name__ == "__main__":
    main()

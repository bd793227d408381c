"""The OpenAI endpoint as background work: a bounded number of segments in flight, each caller's
own fair share, and nothing left to decode once the caller has disconnected."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from tests.engines import GatedEngine
from tests.speech import compose, write_wav
from tests.wsclient import until

SEGMENTS = 24
LONG_TALK = compose([0.3] + ["open the door", 0.6] * SEGMENTS)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("openai") / "talk.wav", LONG_TALK.audio)


def on_server(server, call):
    """Run `call()` on the server's event loop (its executor is not thread-safe) and return the result."""

    async def run():
        return call()

    return asyncio.run_coroutine_threadsafe(run(), server.loop).result(10)


async def post(http: str, path) -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    form.add_field("model", "whisper-1")
    form.add_field("response_format", "verbose_json")
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http}/v1/audio/transcriptions", data=form) as response:
            return response.status, await response.json()


def outstanding(server) -> int:
    """Requests queued in the executor or in its model call now."""
    executor = server.server.ctx.executor
    return on_server(server, lambda: executor.background_depth + len(executor._decoding))


async def test_a_long_upload_keeps_a_bounded_number_of_segments_in_flight(start_instant, long_wav):
    from server.openai_api import IN_FLIGHT_SEGMENTS

    engine = GatedEngine()
    server = start_instant(engine=engine)
    request = asyncio.create_task(post(server.http, long_wav))
    await until(lambda: outstanding(server) >= IN_FLIGHT_SEGMENTS)
    await asyncio.sleep(1.0)  # room for a handler that cuts the whole file ahead to show itself
    assert outstanding(server) <= IN_FLIGHT_SEGMENTS < SEGMENTS
    engine.gate.set()
    status, body = await request
    assert status == 200 and len(body["segments"]) == SEGMENTS


async def test_a_caller_that_disconnects_takes_its_queued_segments_with_it(start_instant, long_wav):
    engine = GatedEngine()
    server = start_instant(engine=engine)
    request = asyncio.create_task(post(server.http, long_wav))
    await until(lambda: outstanding(server) >= 4)
    request.cancel()  # the HTTP client goes away mid-transcription
    with contextlib.suppress(asyncio.CancelledError):
        await request
    await until(lambda: on_server(server, lambda: server.server.ctx.executor.background_depth) == 0)
    engine.gate.set()  # the batch already in the model call finishes; nothing else of it runs
    await until(lambda: outstanding(server) == 0)
    await asyncio.sleep(0.5)
    assert engine.decoded <= server.server.config.inference.max_batch_size < SEGMENTS


async def test_each_caller_gets_its_turn_beside_a_long_upload(start_instant, long_wav, tmp_path, monkeypatch):
    # A file sent while a long one is being transcribed goes next in turn, not after every segment
    # of the long one (one first-come queue before).
    from server import openai_api

    engine = GatedEngine()
    server = start_instant(engine=engine)
    long_request = asyncio.create_task(post(server.http, long_wav))
    await until(lambda: outstanding(server) == openai_api.IN_FLIGHT_SEGMENTS)
    # Another caller (with auth off the share is per address; both tests' clients are on loopback).
    monkeypatch.setattr(openai_api, "_owner", lambda request: "address:another-caller")
    other = compose([0.3, "good morning everyone, how are you all doing today", 0.5])
    short_request = asyncio.create_task(post(server.http, write_wav(tmp_path / "other.wav", other.audio)))
    await until(lambda: outstanding(server) == openai_api.IN_FLIGHT_SEGMENTS + 1)  # the other file's segment too
    engine.gate.set()
    status, body = await short_request
    await long_request
    assert status == 200 and len(body["segments"]) == 1
    long_segment = max(e - s for s, e in LONG_TALK.spans) + 16000  # with preroll and trailing silence
    turn = next(i for i, call in enumerate(engine.calls) if max(call) > long_segment)
    assert turn == 1  # right after the batch already in the model call


async def test_a_live_speaker_holds_background_decodes_until_their_final(start_instant, long_wav):
    # A model call cannot be interrupted: a background segment started while someone speaks would
    # delay their final by a whole decode (about a second of Whisper on a CPU). So none starts then.
    from tests.wsclient import connect, send_audio, start

    engine = GatedEngine()
    server = start_instant(engine=engine, inference={"background_hold_ms": 600_000, "partial_interval_ms": 10_000})
    executor = server.server.ctx.executor
    upload = asyncio.create_task(post(server.http, long_wav))
    await until(lambda: outstanding(server) >= 2)  # one segment in the (held) model call, more queued
    talk = compose([0.3, "good morning everyone, how are you all doing today", 1.0])
    speech_end = talk.spans[0][1]
    ws = await connect(server.url)
    await start(ws)
    await send_audio(ws, talk.audio[:speech_end])
    await until(lambda: on_server(server, lambda: executor.live_speakers) == 1)
    engine.gate.set()  # the call in flight ends; the upload's next segments wait for the speaker
    await asyncio.sleep(1.0)  # room for a scheduler that starts them regardless to show itself
    assert len(engine.calls) == 1 and on_server(server, lambda: executor.background_depth) >= 1
    await send_audio(ws, talk.audio[speech_end:])  # the speaker pauses: their segment closes
    status, body = await upload
    assert status == 200 and len(body["segments"]) == SEGMENTS
    long_segment = max(e - s for s, e in LONG_TALK.spans) + 16000  # with preroll and trailing silence
    assert max(engine.calls[1]) > long_segment  # the live final went next, then the upload went on
    assert all(max(call) <= long_segment for call in engine.calls[2:])
    await ws.close()

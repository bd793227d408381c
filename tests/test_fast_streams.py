"""A WebSocket stream sent faster than real time is background work: after live work, a bounded
number of its segments queued (then the server stops reading it), and cancelled when it vanishes."""

from __future__ import annotations

import asyncio
import contextlib
import math

import websockets

from tests.engines import GatedEngine
from tests.speech import compose
from tests.wsclient import connect, send_audio, start, until

SEGMENTS = 30
TALK = compose([0.3] + ["open the door", 0.6] * SEGMENTS)  # ~48 s: well past the live burst allowance


def on_server(server, call):
    """`call()` on the server's event loop (the executor is not thread-safe); its result."""

    async def run():
        return call()

    return asyncio.run_coroutine_threadsafe(run(), server.loop).result(10)


async def test_a_fast_stream_queues_a_bounded_backlog_as_background_work_and_leaves_with_its_client(
    start_instant, caplog
):
    from server.connection import MAX_BACKGROUND_QUEUED, MAX_UNSCORED_S

    engine = GatedEngine()  # the model is held: segments pile up where the server lets them
    server = start_instant(engine=engine, server={"ping_interval_s": 1.0})  # finds a vanished client soon
    executor = server.server.ctx.executor
    background = lambda: on_server(server, lambda: executor.background_depth)  # noqa: E731
    ws = await connect(server.url)
    await start(ws)
    sender = asyncio.create_task(send_audio(ws, TALK.audio))  # as fast as the socket takes it
    await until(lambda: background() >= MAX_BACKGROUND_QUEUED)
    await asyncio.sleep(1.0)  # room for a server that reads on regardless to show itself
    queued = background()
    # Audio read but not yet through VAD when reading paused (up to MAX_UNSCORED_S, thrice for slack
    # on a loaded machine) may still close segments: a bound set by the server, not by the file.
    period_s = min(b[0] - a[0] for a, b in zip(TALK.spans, TALK.spans[1:])) / 16000
    assert queued <= MAX_BACKGROUND_QUEUED + math.ceil(3 * MAX_UNSCORED_S / period_s) < SEGMENTS - 5
    (connection,) = server.server.ctx.connections
    received = on_server(server, lambda: connection.stream.session.samples_received)
    assert received < len(TALK.audio) * 3 // 4  # the rest waits in socket buffers (TCP backpressure)

    ws.transport.abort()  # the client vanishes
    with contextlib.suppress(websockets.ConnectionClosed, ConnectionError):
        await sender
    await until(lambda: background() <= 1)  # its queued segments were cancelled; its open one is flushed
    engine.gate.set()
    await until(lambda: on_server(server, lambda: executor.queue_depth + executor.background_depth) == 0)
    await until(lambda: not server.server.ctx.connections)
    assert engine.decoded < SEGMENTS // 2  # its live-paced start, the call in flight, its open segment
    assert "requester is gone" not in caplog.text  # cancelled segments are no failures to report

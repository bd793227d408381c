"""Two front ends (two real servers on loopback ports) sharing one real redis-server (issue 18):
resume on the other front end, an overlay on B following a session spoken into A, a token's
connection limit across both, and Redis stopped and restarted mid-stream.

The engine is a stand-in that names each segment by its length (no recognition: these tests are
about which final goes where, and the real model would only make them slower); VAD is the real one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import websockets

from tests.conftest import make_config
from tests.server_thread import ServerThread
from tests.speech import compose
from tests.wsclient import START, connect, finals, recv, send_audio, start, until, until_end

pytest_plugins = ("tests.redis_server",)  # the redis_server fixture

FIRST = compose([0.3, "good morning everyone", 0.8])
HALF_SPOKEN = compose([0.3, "thank you very much"])  # no trailing silence: the segment is still open
SECOND = compose([0.3, "please open the door", 0.8])
TOKEN = "cluster-test-token-0001"
ROOT = Path(__file__).resolve().parent.parent


class LengthEngine:
    """Stand-in recogniser: each clip's text is its length, so every final is told apart."""

    name, model, device = "instant", "stand-in (clip length as text)", "cpu"
    file_model, streaming = model, False

    def decode(self, audios, options):
        from inference.engines.base import DecodeResult

        return [DecodeResult(f"clip of {len(audio)} samples") for audio in audios]

    def on_cpu(self):
        return self


@pytest.fixture
def front_ends(redis_server, scorer):
    """front_ends(**config_sections) -> (A, B): two servers sharing redis_server; stopped after the test."""
    servers = []

    def start_two(**sections):
        cluster = {"redis_url": redis_server.url, "node_ttl_s": 3, **sections.pop("cluster", {})}
        for _ in range(2):
            config = make_config(cluster=cluster, **sections)
            servers.append(ServerThread(config, LengthEngine(), scorer).start())
        return servers[-2], servers[-1]

    yield start_two
    for server in servers:
        server.stop()


def healthz(server) -> dict:
    with urllib.request.urlopen(server.http + "/healthz", timeout=10) as response:
        return json.loads(response.read())


def metric(server, name: str) -> float:
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return next(float(line.split()[1]) for line in lines if line.startswith(name + " "))


async def first_final(ws) -> dict:
    while (reply := await recv(ws))["type"] != "final":
        pass
    return reply


async def test_a_client_whose_socket_drops_resumes_on_the_other_front_end_with_every_final_once(front_ends):
    a, b = front_ends()
    session = "resume-across"
    async with await connect(a.url) as ws:
        await start(ws, session_id=session)
        await send_audio(ws, FIRST.audio)
        first = await first_final(ws)
        await send_audio(ws, HALF_SPOKEN.audio)  # mid-segment when the network drops
        await asyncio.sleep(0.5)
        ws.transport.abort()
    async with await connect(b.url) as ws:
        ready = await start(ws, session_id=session, resume_after=first["segment_id"])
        assert ready["resumed"] is True and ready["session_id"] == session
        missed = await recv(ws)
        await send_audio(ws, SECOND.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        rest = finals(await until_end(ws))
    assert missed["type"] == "final" and missed["replayed"] is True
    delivered = [first, missed, *rest]
    assert [f["segment_id"] for f in delivered] == [0, 1, 2]  # each once, numbered on across front ends
    assert not any(f.get("replayed") for f in rest)
    # one timeline: the segment spoken into B starts after everything A heard
    assert first["end_ms"] < missed["start_ms"] < missed["end_ms"] < rest[0]["start_ms"]
    assert len({f["final_text"] for f in delivered}) == 3


async def test_an_overlay_on_one_front_end_follows_a_session_spoken_into_the_other(front_ends):
    a, b = front_ends()
    overlay = await websockets.connect(f"{b.url}/subscribe?session=hall-7", ping_interval=None)
    assert (await recv(overlay))["type"] == "subscribed"
    async with await connect(a.url) as ws:
        await start(ws, session_id="hall-7")
        await send_audio(ws, FIRST.audio)
        await send_audio(ws, SECOND.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        spoken = finals(await until_end(ws))
    seen = []
    while not seen or seen[-1]["type"] != "end":
        seen.append(await recv(overlay))
    assert [(f["segment_id"], f["final_text"]) for f in finals(seen)] == [
        (f["segment_id"], f["final_text"]) for f in spoken
    ]
    assert all(m["session_id"] == "hall-7" for m in seen)
    await overlay.close()
    late = await websockets.connect(f"{b.url}/subscribe?session=hall-7", ping_interval=None)
    await recv(late)  # subscribed
    replayed = [await recv(late) for _ in spoken]
    assert [f["segment_id"] for f in replayed] == [0, 1] and all(f["replayed"] for f in replayed)
    await late.close()


async def test_a_tokens_connection_limit_holds_across_front_ends(front_ends):
    a, b = front_ends(auth={"tokens": [TOKEN], "max_connections_per_token": 1})
    auth = {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}, "ping_interval": None}
    async with websockets.connect(a.url, **auth) as held:
        await held.send(json.dumps(START))
        assert (await recv(held))["type"] == "ready"
        async with websockets.connect(b.url, **auth) as refused:
            reply = await recv(refused)
            assert reply["code"] == "busy" and "max_connections_per_token = 1" in reply["message"]
            assert "across the cluster" in reply["message"]
    # released on A: B admits the token again

    async def admitted() -> bool:
        # Until A's release reaches Redis, B turns the token away: a busy reply, then a 1013 close
        # that can arrive before this START is sent (it did under load: the send raised).
        try:
            async with websockets.connect(b.url, **auth) as ws:
                await ws.send(json.dumps(START))
                return (await recv(ws))["type"] == "ready"
        except websockets.ConnectionClosed:
            return False

    await until(admitted, timeout=10)


async def test_redis_stopped_and_restarted_mid_stream_loses_nothing(front_ends, redis_server):
    a, b = front_ends()
    session = "outage"
    overlay = await websockets.connect(f"{b.url}/subscribe?session={session}", ping_interval=None)
    await recv(overlay)  # subscribed
    async with await connect(a.url) as ws:
        await start(ws, session_id=session)
        await send_audio(ws, FIRST.audio)
        before = await first_final(ws)
        redis_server.stop()  # Redis away (and back empty: it keeps nothing on disk)
        await send_audio(ws, SECOND.audio)  # live captions go on meanwhile
        during = await first_final(ws)
        await until(lambda: healthz(a)["status"] == "degraded", timeout=10)
        assert healthz(a)["sessions"]["redis"] == "unreachable" and healthz(a)["sessions"]["queued_writes"] > 0
        assert metric(a, "caption_redis_up") == 0 and metric(a, "caption_redis_queued_writes") > 0
        redis_server.start()
        await send_audio(ws, FIRST.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        after = finals(await until_end(ws))
    spoken = [before, during, *after]
    assert [f["segment_id"] for f in spoken] == [0, 1, 2]
    seen = []
    while len(finals(seen)) < len(spoken):
        seen.append(await recv(overlay, timeout=30))
    assert [f["segment_id"] for f in finals(seen)] == [0, 1, 2]  # each once, in order
    await until(lambda: healthz(a)["status"] == "ok" and healthz(a)["sessions"]["queued_writes"] == 0, timeout=10)
    assert metric(a, "caption_redis_up") == 1 and metric(b, "caption_followers") == 1
    # what was written while Redis was away is in Redis now: a follower on B replays it
    late = await websockets.connect(f"{b.url}/subscribe?session={session}", ping_interval=None)
    await recv(late)
    assert [(await recv(late))["segment_id"] for _ in spoken] == [0, 1, 2]
    await late.close()
    await overlay.close()


def test_redis_unreachable_at_start_is_one_line_naming_the_setting(tmp_path):
    from tests.redis_server import free_port

    port = free_port()  # nothing listens there
    config = (ROOT / "config.toml").read_text()
    assert 'redis_url = ""' in config
    config = config.replace('redis_url = ""', f'redis_url = "redis://:secret@127.0.0.1:{port}/0"')
    (tmp_path / "config.toml").write_text(config)
    done = subprocess.run(
        [sys.executable, "run_server.py", "--config", str(tmp_path / "config.toml"), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cluster.redis_url: cannot reach Redis at 127.0.0.1:") and "secret" not in error

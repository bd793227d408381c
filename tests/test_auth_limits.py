"""Auth (tokens, admin, Origin), per-token/per-IP limits, idle timeout, keepalive under load and the
per-stream audio cap - each against a real server on loopback.

The servers decode with KnownPhrasesEngine (tests/engines.py), a stand-in with no model that hears
only the phrases below wherever their exact samples lie whole in a segment: the word checks here
show that a stream's own audio came through whole (past an idle close, a busy model, an audio cap,
slow clients); no test here is about recognition itself."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request

import pytest
import websockets

from tests.engines import KnownPhrasesEngine, RecordingEngine
from tests.speech import compose
from tests.wsclient import START, final_words, finals, recv, send_audio, transcribe, until_end, words

USER, ADMIN = "user-secret-7f3a", "admin-secret-91bc"
SECOND = "second-token-5e2d"
PHRASE = compose([0.3, "good morning everyone", 0.6])
KNOWN_PHRASES = ["good morning everyone", "please open the door", "thank you very much"]


@pytest.fixture(scope="module")
def phrase_engine():
    return KnownPhrasesEngine(KNOWN_PHRASES)


@pytest.fixture
def secured(start_stand_in):
    return start_stand_in(auth={"tokens": [USER], "admin_tokens": [ADMIN]})


def http(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            is_json = response.headers.get_content_type() == "application/json"
            return response.status, json.loads(body) if is_json else {}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


async def open_stream(url: str, **connect_args) -> dict:
    """Connect, configure a stream; returns the first reply (ready, or the error that refused us)."""
    async with websockets.connect(url, ping_interval=None, **connect_args) as ws:
        try:
            await ws.send(json.dumps(START))
        except websockets.ConnectionClosed:
            pass  # refused at once: the reason is already waiting to be read
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply["type"] == "error":
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(ws, 10)
            reply["close_code"] = closed.value.rcvd.code
        return reply


@pytest.mark.parametrize(
    "how, accepted",
    [
        ("none", False),
        ("wrong", False),
        ("header", True),
        ("query", True),
        ("subprotocol", True),
        ("admin-header", True),
    ],
)
async def test_websocket_needs_a_valid_token_given_any_way_a_client_can(secured, how, accepted):
    url, args = secured.url, {"subprotocols": ["binary"]}
    if how == "wrong":
        url += "/?token=not-the-token"
    elif how == "header":
        args["additional_headers"] = {"Authorization": f"Bearer {USER}"}
    elif how == "admin-header":
        args["additional_headers"] = {"Authorization": f"Bearer {ADMIN}"}
    elif how == "query":
        url += f"/?token={USER}"
    elif how == "subprotocol":
        args["subprotocols"] = ["binary", f"token.{USER}"]
    reply = await open_stream(url, **args)
    if accepted:
        assert reply["type"] == "ready"
    else:
        assert reply["code"] == "unauthorized" and reply["close_code"] == 1008
        assert "token" in reply["message"]


@pytest.mark.parametrize(
    "path, method, token, status",
    [
        ("/healthz", "GET", None, 401),
        ("/healthz", "GET", "nope", 401),
        ("/healthz", "GET", USER, 200),
        ("/metrics", "GET", None, 401),
        ("/metrics", "GET", USER, 200),
        ("/admin/gpu/clear-cache", "POST", None, 401),
        ("/admin/gpu/clear-cache", "POST", USER, 403),
        ("/admin/gpu/clear-cache", "POST", ADMIN, 200),
        ("/status", "GET", None, 200),  # pages hold no data; they ask for a token themselves
    ],
)
def test_http_api_matrix(secured, path, method, token, status):
    code, body = http(secured.http + path, token, method)
    assert code == status
    if status in (401, 403):
        assert body["code"] in ("unauthorized", "forbidden") and body["error"]


@pytest.mark.parametrize(
    "allowed, origin, ok",
    [
        ([], None, True),  # not a browser
        ([], "http://127.0.0.1:{port}", True),  # this server's own page
        ([], "http://evil.example", False),
        (["https://lecture.example.org"], "https://lecture.example.org", True),
        (["https://lecture.example.org"], "http://127.0.0.1:{port}", True),  # own pages stay allowed (issue 15)
        (["*"], "http://anything.example", True),
    ],
)
async def test_browser_origin_allowlist(start_stand_in, allowed, origin, ok):
    # Live audio from any origin is the default since issue 13 (tests/test_security.py); here the
    # allowlist alone decides.
    server = start_stand_in(auth={"allowed_origins": allowed, "stream_from_any_origin": False})
    args = {"origin": origin.format(port=server.server.port)} if origin else {}
    if ok:
        assert (await open_stream(server.url, **args))["type"] == "ready"
    else:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await open_stream(server.url, **args)
        assert refused.value.response.status_code == 403


async def test_per_ip_and_per_token_connection_limits(start_stand_in):
    server = start_stand_in(auth={"tokens": [USER, SECOND], "max_connections_per_token": 1})
    headers = {"Authorization": f"Bearer {USER}"}
    async with websockets.connect(server.url, additional_headers=headers, ping_interval=None):
        refused = await open_stream(server.url, additional_headers=headers)
        assert refused["code"] == "busy" and refused["close_code"] == 1013 and "token" in refused["message"]
        other = await open_stream(server.url, additional_headers={"Authorization": f"Bearer {SECOND}"})
        assert other["type"] == "ready"
    assert (await open_stream(server.url, additional_headers=headers))["type"] == "ready"  # released

    per_ip = start_stand_in(auth={"max_connections_per_ip": 2})
    async with websockets.connect(per_ip.url, ping_interval=None), websockets.connect(per_ip.url, ping_interval=None):
        refused = await open_stream(per_ip.url)
        assert refused["code"] == "busy" and "127.0.0.1" in refused["message"]


async def test_tokens_never_reach_the_logs(secured, caplog):
    caplog.set_level(logging.DEBUG)
    await open_stream(secured.url + f"/?token={USER}")
    await open_stream(secured.url + "/?token=wrong-secret-xyz")
    http(secured.http + "/healthz", ADMIN)
    http(secured.http + f"/metrics?token={USER}")
    # The server's records (aiohttp's access log included); the test's own client logs its request line.
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("websockets"))
    assert "/healthz" in logged or "/metrics" in logged  # the access log ran
    for secret in (USER, ADMIN, "wrong-secret-xyz"):
        assert secret not in logged


async def test_idle_connection_is_closed_after_its_open_segment_is_finalized(start_stand_in):
    server = start_stand_in(server={"idle_timeout_s": 1.5})
    async with websockets.connect(server.url, ping_interval=None) as ws:
        await ws.send(json.dumps(START))
        await recv(ws)
        await send_audio(ws, compose([0.3, "thank you very much"]).audio)  # then nothing: mid-segment
        replies = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                replies.append(await recv(ws, 30))
    assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
    assert words(finals(replies)[0]["final_text"]) == "thank you very much"


async def test_keepalive_does_not_close_a_connection_while_the_server_is_busy_decoding(start_stand_in, phrase_engine):
    engine = RecordingEngine(phrase_engine)
    server = start_stand_in(engine=engine, server={"ping_interval_s": 0.4})
    engine.gate.clear()  # the model is "busy" for 3 s: every decode waits
    async with websockets.connect(server.url, ping_interval=None) as ws:
        await ws.send(json.dumps(START))
        await recv(ws)
        await send_audio(ws, PHRASE.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        await asyncio.sleep(3.0)  # ~7 server pings; the client library answers them
        engine.gate.set()
        replies = await until_end(ws)
    assert words(finals(replies)[0]["final_text"]) == "good morning everyone"


async def test_a_client_waiting_for_the_captions_it_asked_for_is_not_idle(start_stand_in, phrase_engine):
    # FunASR's offline clients send a whole file, then wait: when its decode queues behind live work
    # past idle_timeout_s, the client is waiting on the server, not idle. It gets every caption and
    # the end reply, and the socket is then closed only after a whole idle period of its own.
    engine = RecordingEngine(phrase_engine)
    server = start_stand_in(engine=engine, server={"idle_timeout_s": 1.0})
    engine.gate.clear()  # the model is "busy" for 3 s, three idle periods
    async with websockets.connect(server.url, ping_interval=None) as ws:
        await ws.send(json.dumps(START))
        await recv(ws)
        await send_audio(ws, PHRASE.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        await asyncio.sleep(3.0)
        engine.gate.set()
        replies = await until_end(ws)
        ended = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws, 30)
    assert words(finals(replies)[0]["final_text"]) == "good morning everyone"
    assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
    assert time.monotonic() - ended >= 0.8  # its own idle period, counted from the answer


async def test_a_stream_past_its_audio_cap_is_ended_with_its_captions(start_stand_in):
    server = start_stand_in(server={"max_stream_audio_s": 2.0})
    long_audio = compose([0.3, "good morning everyone", 0.6, "please open the door", 0.6]).audio
    async with websockets.connect(server.url, ping_interval=None) as ws:
        await ws.send(json.dumps(START))
        await recv(ws)
        await send_audio(ws, long_audio)
        replies = await until_end(ws)
    errors = [r for r in replies if r["type"] == "error"]
    assert errors and errors[0]["code"] == "audio_limit" and "max_stream_audio_s" in errors[0]["message"]
    assert words(finals(replies)[0]["final_text"]) == "good morning everyone"
    assert replies[-1]["type"] == "end"


async def test_slowloris_clients_do_not_disturb_a_live_stream_and_stalled_sockets_are_closed(start_stand_in):
    import base64
    import os
    import socket

    server = start_stand_in(server={"idle_timeout_s": 1.5})
    port = server.server.port
    half_headers, half_frames = [], []
    for _ in range(20):  # an HTTP request that never finishes its headers
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock")
        half_headers.append(sock)
    for _ in range(5):  # a WebSocket that starts a frame and never finishes it
        sock = socket.create_connection(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        assert b"101" in sock.recv(4096).split(b"\r\n")[0]
        sock.sendall(b"\x82\xfe\x10\x00\x00\x00")  # binary frame header for 4096 bytes, a 2-byte mask, stop
        sock.settimeout(10)
        half_frames.append(sock)
    good = await transcribe(server.url, PHRASE.audio, realtime=True)
    assert final_words(good) == "good morning everyone"
    for sock in half_frames:  # the idle timeout closes them: the server sends its close and hangs up
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data[:1] == b"\x88"  # a close frame
        sock.close()
    for sock in half_headers:
        sock.close()


async def test_invalid_tokens_are_throttled_per_address(start_stand_in):
    server = start_stand_in(auth={"tokens": [USER], "failed_auth_per_minute": 3})
    for _ in range(3):
        assert http(server.http + "/healthz", "wrong-token-000000")[0] == 401
    code, body = http(server.http + "/healthz", USER)  # even the right token waits: guessing stops
    assert code == 429 and body["code"] == "too_many_failures" and "failed_auth_per_minute" in body["error"]
    refused = await open_stream(server.url + f"/?token={USER}")
    assert refused["code"] == "too_many_failures" and refused["close_code"] == 1013


def test_throttling_forgets_an_address_after_a_minute_and_a_missing_token_is_no_failure():
    from types import SimpleNamespace

    from server.auth import AuthError, Gate
    from settings import config

    now = [0.0]
    settings = config.load(None, {"auth": {"tokens": [USER], "failed_auth_per_minute": 2}}).auth
    gate = Gate(settings, environ={}, clock=lambda: now[0])

    def ask(token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = SimpleNamespace(remote="10.0.0.9", headers=headers, query={})
        try:
            return gate.identify(request).name
        except AuthError as exc:
            return exc.status

    assert [ask(), ask(), ask(), ask("bad-token-xxxxxxxx"), ask("bad-token-xxxxxxxx"), ask(USER)] == [
        401,
        401,
        401,
        401,
        401,
        429,
    ]
    now[0] += 61
    assert ask(USER).startswith("token-")


def test_weak_tokens_are_refused_at_startup_naming_the_setting():
    from server.auth import Gate
    from settings import config

    for setting in ("tokens", "admin_tokens"):
        with pytest.raises(config.ConfigError) as weak:
            config.load(None, {"auth": {setting: ["short-token"]}})
        assert f"auth.{setting}" in str(weak.value) and "16" in str(weak.value)
        assert "short-token" not in str(weak.value)  # never echoed
    with pytest.raises(config.ConfigError) as weak:
        Gate(config.load().auth, environ={"LIVECAPTION_TOKENS": "abc"})
    assert "LIVECAPTION_TOKENS" in str(weak.value)

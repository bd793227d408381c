"""Issue 15 and 13's origin policy, against a real server on loopback: who may reach which route from
a browser of another origin (auth.ROUTE_ACCESS), the Host allowlist against DNS rebinding, admin with
auth off, hostile bytes that must answer 4xx or a clean close with no traceback or token in the
logs, slow and silent connections closed in bounded time, and running out of file descriptors.

No test here reads words: the servers decode with the product's "instant" engine (fixed text, no
model) instead of Whisper."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import time

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.engines.instant import InstantEngine
from tests.server_thread import servers_on
from tests.wsclient import START, connect, recv

USER, ADMIN = "user-secret-7f3a-0001", "admin-secret-91bc-0002"
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def shared_server(scorer):
    """conftest's shared_server on the "instant" engine."""
    with servers_on(InstantEngine(), scorer) as start:
        yield start()


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, return what the server answers until it closes (or stops answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and (answer.startswith(b"HTTP/1.1 101") or b"keep-alive" in answer.lower()):
                    break  # a socket, or a kept-alive connection: the answer's head is all we need
        except TimeoutError:
            pass
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0


def http(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> int:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return status_of(raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body))


def upgrade(port: int, path: str = "/", extra: bytes = b"", host: bytes | None = None) -> bytes:
    key = base64.b64encode(os.urandom(16))
    host = host or f"127.0.0.1:{port}".encode()
    request = (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        except TimeoutError:
            pass
        return answer


def no_tracebacks_or(records, *secrets: str) -> None:
    for record in records:
        text = record.getMessage() + (record.exc_text or "")
        assert record.exc_info is None or not record.name.startswith("aiohttp"), (record.name, text)
        assert "Traceback" not in text, text
        for secret in secrets:
            assert secret not in text, (record.name, text)


# --- the policy table ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path, method, socket_, access",
    [
        ("/", "GET", True, "live audio"),
        ("/ws", "GET", True, "live audio"),
        ("/subscribe", "GET", True, "private"),
        ("/", "GET", False, "public"),
        ("/status", "HEAD", False, "public"),
        ("/client_js/livecaption.js", "GET", False, "public"),
        ("/api/history", "GET", False, "private"),
        ("/api/sessions/x/export.srt", "GET", False, "private"),
        ("/api/jobs", "POST", False, "private"),
        ("/v1/audio/transcriptions", "POST", False, "private"),
        ("/admin/gpu/clear-cache", "POST", False, "admin"),
        ("/admin", "GET", False, "admin"),  # the admin page itself
        ("/admin/devices", "GET", False, "admin"),
        ("/", "POST", False, "private"),
        ("/healthz", "GET", False, "private"),
    ],
)
def test_route_access_table(path, method, socket_, access):
    from server.auth import ROUTE_ACCESS, route_access

    assert route_access(path, method, socket_).value == access
    assert ROUTE_ACCESS[-1][:2] == ("*", "*")  # anything not listed is private


@pytest.mark.parametrize(
    "method, path, headers, status",
    [
        # state-changing requests from a page of another site (cross-site form POST, fetch)
        ("POST", "/api/jobs", {"Origin": EVIL}, 403),
        ("POST", "/api/jobs", {"Origin": "null"}, 403),
        ("POST", "/api/jobs", {"Sec-Fetch-Site": "cross-site"}, 403),
        ("POST", "/v1/audio/transcriptions", {"Origin": EVIL}, 403),
        ("DELETE", "/api/sessions/s1", {"Origin": EVIL}, 403),
        ("POST", "/admin/gpu/clear-cache", {"Origin": EVIL}, 403),
        ("POST", "/admin/gpu/clear-cache", {"Sec-Fetch-Site": "same-site"}, 403),
        # reads of captions from a foreign browser context
        ("GET", "/api/history", {"Sec-Fetch-Site": "cross-site"}, 403),
        ("GET", "/api/sessions/s1/export.txt", {"Origin": EVIL}, 403),
        # the same without a browser, or from this server's own pages: allowed
        ("POST", "/admin/gpu/clear-cache", {}, 200),
        ("POST", "/admin/gpu/clear-cache", {"Origin": "http://127.0.0.1:{port}"}, 200),
        ("GET", "/api/history", {"Sec-Fetch-Site": "same-origin"}, 200),
        ("GET", "/api/history", {"Sec-Fetch-Site": "none"}, 200),
        ("GET", "/api/history", {}, 200),
        # pages hold no data: any origin may link to them
        ("GET", "/status", {"Sec-Fetch-Site": "cross-site"}, 200),
        # DNS rebinding: a foreign name that resolves here
        ("GET", "/api/history", {"Host": "evil.example:{port}"}, 403),
        ("GET", "/status", {"Host": "evil.example"}, 403),
        ("GET", "/healthz", {"Host": "localhost:{port}"}, 200),
        ("GET", "/healthz", {"Host": "[::1]:{port}"}, 200),
        ("GET", "/healthz", {"Host": "192.168.1.20:{port}"}, 200),
    ],
)
def test_foreign_origins_and_hosts_change_nothing_and_read_nothing_with_auth_off(
    shared_server, method, path, headers, status
):
    port = shared_server.server.port
    headers = {k: v.format(port=port) for k, v in headers.items()}
    if "Host" in headers:  # replace the default Host line
        host = headers.pop("Host")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        assert status_of(raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())) == status
        return
    got = http(port, method, path, headers)
    if status == 200:
        assert got < 400 or got == 404, got  # allowed through the guard (the route itself may 404 on s1)
    else:
        assert got == status


def test_allowed_hosts_adds_a_name_and_star_turns_the_check_off(start_instant):
    named = start_instant(auth={"allowed_hosts": ["captions.example.org"]})
    port = named.server.port
    ask = "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n"
    assert status_of(raw_request(port, ask.format("captions.example.org").encode())) == 200
    assert status_of(raw_request(port, ask.format("other.example.org").encode())) == 403
    anything = start_instant(auth={"allowed_hosts": ["*"]})
    assert status_of(raw_request(anything.server.port, ask.format("other.example.org").encode())) == 200


def test_with_auth_on_the_host_check_is_the_tokens_job(start_instant):
    secured = start_instant(auth={"tokens": [USER]})
    request = f"GET /healthz HTTP/1.1\r\nHost: captions.example.org\r\nAuthorization: Bearer {USER}\r\n"
    request += "Connection: close\r\n\r\n"  # the answer ends with the socket, not raw_request's 10 s timeout
    assert status_of(raw_request(secured.server.port, request.encode())) == 200


async def test_funasr_html5_page_of_another_origin_streams_live_audio_with_the_default_config(shared_server):
    """Issue 13: FunASR's HTML5 client is served from its own origin or opened as a file; it may
    stream into a new session of its own, but not join, resume or follow a named one."""
    for origin in ("http://localhost:8000", "null", EVIL):
        for path in ("/", "/ws"):
            async with websockets.connect(shared_server.url + path, origin=origin, ping_interval=None) as ws:
                await ws.send(json.dumps(START))
                ready = await recv(ws)
                assert ready["type"] == "ready" and ready["session_id"]
            async with websockets.connect(shared_server.url + path, origin=origin, ping_interval=None) as ws:
                await ws.send(json.dumps({**START, "session_id": "lecture-1", "resume_after": -1}))
                refused = await recv(ws)
                assert refused["type"] == "error" and refused["code"] == "forbidden_origin"
        with pytest.raises(websockets.InvalidStatus) as caught:
            await websockets.connect(shared_server.url + "/subscribe?session=lecture-1", origin=origin)
        assert caught.value.response.status_code == 403


async def test_stream_from_any_origin_off_keeps_sockets_to_allowed_origins(start_instant):
    server = start_instant(auth={"stream_from_any_origin": False})
    with pytest.raises(websockets.InvalidStatus) as caught:
        await websockets.connect(server.url + "/ws", origin=EVIL)
    assert caught.value.response.status_code == 403


def test_admin_with_auth_off_only_from_this_host_and_never_behind_a_proxy(start_instant, shared_server):
    port = shared_server.server.port
    assert http(port, "POST", "/admin/gpu/clear-cache") == 200
    for header in ("X-Forwarded-For: 203.0.113.9", "Forwarded: for=203.0.113.9", "X-Real-IP: 203.0.113.9"):
        name, value = header.split(": ")
        assert http(port, "POST", "/admin/gpu/clear-cache", {name: value}) == 403
    everywhere = start_instant(server={"host": "0.0.0.0"})  # reachable beyond loopback
    assert http(everywhere.server.port, "POST", "/admin/gpu/clear-cache") == 403
    secured = start_instant(server={"host": "0.0.0.0"}, auth={"admin_tokens": [ADMIN]})
    answer = http(
        secured.server.port,
        "POST",
        "/admin/gpu/clear-cache",
        {"Authorization": f"Bearer {ADMIN}", "X-Real-IP": "1.2.3.4"},
    )
    assert answer == 200  # an admin token works from anywhere


# --- hostile bytes ------------------------------------------------------------------------------
HOSTILE = [
    b"GET /healthz HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer \xff\xfe\x80abc\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: h\r\nAuthorization: \xc3\x28\r\n\r\n",
    b"GET /client_js/%00.js HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /client_js/a%00b/../livecaption.js HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /client_js/%ff%fe.js HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /healthz?token=%ff%00 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /subscribe?session=%ff HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: h\r\nOrigin: \xff\r\nSec-Fetch-Site: \xff\r\n\r\n",
    b"GET /api/history?q=%ff%fe HTTP/1.1\r\nHost: h\r\n\r\n",
]


@pytest.mark.parametrize("auth", [False, True])
def test_hostile_http_bytes_answer_4xx_with_one_line_and_no_traceback(start_instant, caplog, auth):
    caplog.set_level(logging.INFO)
    server = start_instant(auth={"tokens": [USER]} if auth else {})
    for request in HOSTILE:
        request = request.replace(b"Host: h", f"Host: 127.0.0.1:{server.server.port}".encode())
        status = status_of(
            raw_request(server.server.port, request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        )
        assert 200 <= status < 500, (request, status)
    no_tracebacks_or(caplog.records, USER)


@pytest.mark.parametrize("auth", [False, True])
def test_non_utf8_websocket_subprotocol_is_refused_or_ignored_cleanly(start_instant, caplog, auth):
    caplog.set_level(logging.INFO)
    server = start_instant(auth={"tokens": [USER]} if auth else {})
    port = server.server.port
    for protocols in (b"token.\xff\xfe\x80", b"binary, \xc3\x28", b"\xff" * 40):
        answer = upgrade(port, "/", b"Sec-WebSocket-Protocol: " + protocols + b"\r\n")
        assert status_of(answer) in (101, 400, 401, 403), answer[:200]
    no_tracebacks_or(caplog.records, USER)


header_bytes = st.binary(min_size=1, max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b)


@pytest.mark.slow
def test_random_bytes_in_paths_and_headers_never_get_a_500_or_a_traceback(start_instant, caplog):
    caplog.set_level(logging.INFO)
    server = start_instant(auth={"tokens": [USER]})
    port = server.server.port
    statuses = []

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(
        path=st.sampled_from(["/", "/ws", "/subscribe", "/client_js/", "/api/history", "/healthz", "/status"]),
        suffix=header_bytes,
        name=st.sampled_from([b"Authorization", b"Sec-WebSocket-Protocol", b"Origin", b"Host", b"Cookie", b"X"]),
        value=header_bytes,
        upgrade_=st.booleans(),
    )
    def probe(path, suffix, name, value, upgrade_):
        target = path.encode() + suffix.replace(b" ", b"%20")
        lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", name + b": " + value, b"Connection: close"]
        if upgrade_:
            key = base64.b64encode(os.urandom(16))
            lines += [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Key: " + key]
            lines += [b"Sec-WebSocket-Version: 13"]
        statuses.append(status_of(raw_request(port, b"\r\n".join(lines) + b"\r\n\r\n", timeout=5)))

    probe()
    assert statuses and all(status < 500 for status in statuses), sorted(set(statuses))
    no_tracebacks_or(caplog.records, USER)


def test_a_malformed_request_never_writes_a_token_to_the_log(start_instant, caplog):
    caplog.set_level(logging.DEBUG)
    server = start_instant(auth={"tokens": [USER]})
    port = server.server.port
    bad = [
        f"GET /?token={USER} HTTP/1.1\x01\r\nHost: x\r\n\r\n".encode(),  # malformed request line
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER}\x01\r\n\r\n".encode(),  # bad header
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX: {USER}\r\nBad Header {USER}\r\n\r\n".encode(),
        f"GET /?token={USER} HTTP/1.1\r\nHost: x\r\n{'A' * 9000}: y\r\n\r\n".encode(),  # too long
    ]
    for request in bad:
        assert status_of(raw_request(port, request)) == 400
    no_tracebacks_or(caplog.records, USER)


def test_status_page_never_inserts_health_values_as_html():
    from server.pages import STATUS_PAGE

    script = STATUS_PAGE.read_text().split("<script", 1)[1]  # <script type="module"> since the i18n pages
    assert "innerHTML" not in script and "textContent" in script


# --- slow, silent and greedy clients ------------------------------------------------------------
def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the server hangs up (sending `trickle` a byte at a time meanwhile)."""
    began = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - began < seconds:
        if trickle:
            try:
                sock.sendall(trickle[:1])
            except OSError:
                return time.monotonic() - began
            trickle = trickle[1:]
        try:
            data = sock.recv(4096)
            if not data or b"408" in data or b"400" in data:
                return time.monotonic() - began
        except TimeoutError:
            pass
        except OSError:
            return time.monotonic() - began
    raise AssertionError(f"still open after {seconds} s")


def test_silent_half_header_slow_header_and_slow_body_connections_are_closed(start_instant, caplog):
    server = start_instant(server={"keepalive_timeout_s": 1.0, "body_timeout_s": 1.0, "body_min_kb_s": 1.0})
    port = server.server.port
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    silent, half, slow, body = socks
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ab")
    body.sendall(
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n".encode()
    )
    assert closed_within(silent, 6) < 6
    assert closed_within(half, 6) < 6
    assert closed_within(slow, 6, trickle=b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200) < 6
    assert closed_within(body, 8, trickle=b"x" * 200) < 8
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    no_tracebacks_or(caplog.records)


async def test_subscribers_count_against_the_per_address_limit_and_idle_ones_are_closed(start_instant):
    server = start_instant(auth={"max_connections_per_ip": 2}, server={"subscriber_idle_s": 1.0})
    first = await websockets.connect(server.url + "/subscribe?session=s1", ping_interval=None)
    assert (await recv(first))["type"] == "subscribed"
    async with await connect(server.url) as streaming:
        await streaming.send(json.dumps(START))
        assert (await recv(streaming))["type"] == "ready"
        third = await websockets.connect(server.url + "/subscribe?session=s1", ping_interval=None)
        refused = await recv(third)
        assert refused["code"] == "busy" and "max_connections_per_ip" in refused["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(third)
        assert closed.value.rcvd.code == 1013
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await recv(first, 10)  # nothing to show for subscriber_idle_s
    assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason


def test_websocket_routes_have_a_per_address_limit_by_default():
    from settings import config

    assert config.load().auth.max_connections_per_ip > 0


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit():
    import subprocess
    import sys

    code = (
        "import resource; soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard));"
        "from server.app import raise_fd_limit; print(raise_fd_limit() == resource.getrlimit(resource.RLIMIT_NOFILE),"
        " resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard or hard == resource.RLIM_INFINITY)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_out_of_file_descriptors_is_a_503_not_a_500(start_instant, caplog):
    import http.client
    import resource

    server = start_instant()
    conns = [http.client.HTTPConnection("127.0.0.1", server.server.port, timeout=10) for _ in range(3)]
    for conn in conns:  # accepted and kept alive before the limit is reached
        conn.request("GET", "/healthz")
        assert conn.getresponse().read()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    statuses = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, hard))  # nothing new may be opened
        for conn, path in zip(conns, ("/status", "/healthz", "/client_js/livecaption.js")):
            conn.request("GET", path)
            statuses.append(conn.getresponse().status)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for conn in conns:
        conn.close()
    assert all(status in (200, 404, 503) for status in statuses), statuses
    no_tracebacks_or(caplog.records)


async def test_behind_a_trusted_proxy_each_client_has_its_own_per_address_count(start_instant):
    """L6: behind a same-host proxy every client is 127.0.0.1; auth.trusted_proxies lets the count
    follow the address the proxy reports. Untrusted peers cannot pick an address by a header."""

    def via(client):
        return {"additional_headers": {"X-Forwarded-For": f"198.51.100.7, {client}"}, "ping_interval": None}

    async def first_reply(url, **args):
        async with websockets.connect(url, **args) as ws:
            try:
                await ws.send(json.dumps(START))
            except websockets.ConnectionClosed:
                pass  # refused at once: the reason is already waiting to be read
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

    proxied = start_instant(auth={"max_connections_per_ip": 1, "trusted_proxies": ["127.0.0.1"]})
    async with websockets.connect(proxied.url, **via("203.0.113.1")) as held:
        await held.send(json.dumps(START))
        assert (await recv(held))["type"] == "ready"
        assert (await first_reply(proxied.url, **via("203.0.113.2")))["type"] == "ready"
        refused = await first_reply(proxied.url, **via("203.0.113.1"))
        assert refused["code"] == "busy" and "203.0.113.1" in refused["message"]
    direct = start_instant(auth={"max_connections_per_ip": 1})
    async with websockets.connect(direct.url, **via("203.0.113.1")) as held:
        await held.send(json.dumps(START))
        assert (await recv(held))["type"] == "ready"
        refused = await first_reply(direct.url, **via("203.0.113.2"))
        assert refused["code"] == "busy" and "127.0.0.1" in refused["message"]


def test_trusted_proxies_must_be_ip_addresses():
    from settings import config

    with pytest.raises(config.ConfigError) as bad:
        config.load(None, {"auth": {"trusted_proxies": ["proxy.lan"]}})
    assert "auth.trusted_proxies" in str(bad.value)

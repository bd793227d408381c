"""Issue 15 M4: the real server process (run_server.py) under a low hard open-file limit. Filled
with idle connections up to the limit, it refuses what needs a new descriptor cleanly (a 503, a
close without an answer, or a wait in the listen queue), never a 500 or a traceback in its log, and
once the connections close it serves again as before: HTTP, files and caption sockets."""

from __future__ import annotations

import resource
import socket
import sys
import time

import pytest

from tests.test_lifecycle import ServerProcess

HARD_LIMIT = 256  # open files for the whole server process: models, threads, sockets


def low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (HARD_LIMIT, HARD_LIMIT))


def ask(sock: socket.socket, request: bytes, timeout: float) -> bytes | None:
    """Send one request; the answer's head, b"" when the server closed without answering, None
    when nothing came within `timeout` (still queued, not yet accepted)."""
    sock.settimeout(timeout)
    try:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                return answer
            answer += chunk
        return answer
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


def status(answer: bytes | None) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer else None


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: a2tra2tra2tra2tra2traw==\r\n\r\n"
)


def connect(port: int, opened: list[socket.socket]) -> socket.socket:
    opened.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return opened[-1]


@pytest.mark.slow  # a server process (run_server.py): no fixture marks it end to end
def test_at_the_open_file_limit_requests_are_refused_cleanly_and_served_again_after(tmp_path):
    server = ServerProcess(tmp_path, preexec_fn=low_fd_limit, keepalive_timeout_s="300.0", max_connections_per_ip="0")
    others: list[socket.socket] = []  # connections made at and after the limit
    try:
        assert resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE) == (HARD_LIMIT, HARD_LIMIT)  # soft = hard
        # Idle kept-alive connections until the server stops accepting (out of descriptors).
        idle: list[socket.socket] = []
        outcomes = []
        for _ in range(HARD_LIMIT + 20):
            sock = connect(server.port, others)
            answer = ask(sock, get("/healthz"), timeout=3)
            if status(answer) != 200:
                outcomes.append(answer)
                break
            idle.append(others.pop())
        assert outcomes, "the server accepted more connections than it has descriptors"
        assert len(idle) > HARD_LIMIT // 2  # most descriptors went to connections
        # At the limit: a new connection waits or is closed; on a connection it already has, a
        # request that needs a file and a caption socket answer or say busy.
        outcomes.append(ask(connect(server.port, others), get("/healthz"), timeout=3))
        file_answer = ask(idle[0], get("/status"), timeout=10)
        socket_answer = ask(idle[1], UPGRADE, timeout=10)
        for answer in outcomes:
            assert answer is None or answer == b"" or status(answer) == 503, answer[:300]
        assert status(file_answer) in (200, 503), file_answer
        assert status(socket_answer) in (101, 503), socket_answer
        # Freed: served again, new connections and caption sockets alike.
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 30
        while status(answer := ask(connect(server.port, others), get("/status"), timeout=5)) != 200:
            assert time.monotonic() < deadline, answer
            time.sleep(0.2)
        assert status(ask(connect(server.port, others), UPGRADE, timeout=10)) == 101
        log = "".join(server.log)
        assert "Traceback" not in log and '" 500 ' not in log, log[-3000:]
    finally:
        for sock in idle + others:
            sock.close()
        server.kill()


def test_the_stdlib_loop_out_of_descriptors_at_accept_is_one_line_without_a_traceback():
    """Without uvloop, asyncio logs each refused accept() with its traceback: the redactor on the
    asyncio logger makes that one warning line (the logger, record and filter are the real ones)."""
    import errno
    import logging

    from server.auth import LogRedactor

    try:
        raise OSError(errno.EMFILE, "Too many open files")
    except OSError:
        record = logging.getLogger("asyncio").makeRecord(
            "asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource", (), sys.exc_info()
        )
    assert LogRedactor().filter(record)
    assert record.exc_info is None and record.levelname == "WARNING"
    assert record.getMessage() == "socket.accept() out of system resource: OSError: [Errno 24] Too many open files"

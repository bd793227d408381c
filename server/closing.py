"""Why the server closes a WebSocket, and with which close code: the one table of them.

Clients act on the code (docs/protocol.md): 1013 means "try again later" (they reconnect after a
pause), 1001/1012 a server going away or restarting (reconnect), 1008 "do not retry as you are",
1000 a normal end, 4001 "your session continues on another connection" (do not reconnect).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import WSCloseCode, web

SESSION_TAKEN_OVER = 4001  # the captions session continues on another connection (private-use range)
MAX_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code


@dataclass(frozen=True)
class Closing:
    code: int
    reason: str


SHUTTING_DOWN = Closing(WSCloseCode.GOING_AWAY, "server shutting down")
RESTARTING = Closing(WSCloseCode.SERVICE_RESTART, "server restarting, reconnect shortly")
TOO_MANY_ERRORS = Closing(WSCloseCode.POLICY_VIOLATION, "too many invalid messages")
TAKEN_OVER = Closing(SESSION_TAKEN_OVER, "session resumed on another connection")
DISPLAY_TOO_SLOW = Closing(WSCloseCode.POLICY_VIOLATION, "display too slow")

# Refusals a client may simply retry later (the server is full or it went too fast); any other
# refusal (bad token, forbidden session, ...) would fail the same way again.
RETRYABLE = frozenset({"busy", "too_many_failures"})


def stopping(restart: bool) -> Closing:
    return RESTARTING if restart else SHUTTING_DOWN


def idle(reason: str) -> Closing:
    """Nothing happened for the configured time: a normal close (the client may reconnect)."""
    return Closing(WSCloseCode.OK, reason)


def busy(reason: str) -> Closing:
    return Closing(WSCloseCode.TRY_AGAIN_LATER, reason)


def refused(error_code: str, reason: str) -> Closing:
    """A request turned away with protocol error `error_code`."""
    code = WSCloseCode.TRY_AGAIN_LATER if error_code in RETRYABLE else WSCloseCode.POLICY_VIOLATION
    return Closing(code, reason)


def slow_reader(reason: str) -> Closing:
    """A client that stopped reading its replies: it cannot hold server memory."""
    return Closing(WSCloseCode.POLICY_VIOLATION, reason)


def reason_bytes(reason: str) -> bytes:
    """The reason as a close frame can carry it: UTF-8, cut on a character boundary (a Chinese
    reason cut by characters could still be three times too long)."""
    encoded = reason.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return encoded
    return encoded[:MAX_REASON_BYTES].decode(errors="ignore").encode()


async def close(ws: web.WebSocketResponse, closing: Closing) -> None:
    await ws.close(code=closing.code, message=reason_bytes(closing.reason))

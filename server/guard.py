"""Who may do what, before any handler runs: the Host allowlist, the origin policy
(auth.ROUTE_ACCESS), the token; then the handler under a slow-body watchdog, with running out of
file descriptors answered 503 rather than 500."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from server import closing, protocol
from server.access_log import REFUSED
from server.auth import Access, AuthError, Principal, route_access
from server.context import ServerContext
from settings.config import Config

log = logging.getLogger(__name__)

PRINCIPAL = web.RequestKey("principal", Principal)  # who the guard let in, for the handlers
FOREIGN_ORIGIN = web.RequestKey("foreign_origin", bool)  # a live-audio socket from a page of another origin
FD_ERRORS = (errno.EMFILE, errno.ENFILE)  # out of file descriptors: answer 503, not 500

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class Guard:
    def __init__(self, ctx: ServerContext, config: Config) -> None:
        assert ctx.gate is not None
        self.ctx = ctx
        self.gate = ctx.gate
        self.config = config

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request: Host, origin policy (auth.ROUTE_ACCESS), token, then the handler under
        a slow-body watchdog, with running out of file descriptors answered 503."""
        gate = self.gate
        upgrade = is_upgrade(request)
        if upgrade and not request.headers.get("Sec-WebSocket-Key", "").isascii():
            # aiohttp's handshake answers any other bad key with a 400, but raises on this one (a 500)
            raise web.HTTPBadRequest(text="Sec-WebSocket-Key must be 16 bytes in base64")
        access = route_access(request.path, request.method, upgrade)
        try:
            if not gate.host_allowed(request):
                raise AuthError(403, "forbidden_host", "this server is not known by that name (see auth.allowed_hosts)")
            if access is not Access.PUBLIC:
                trusted = gate.origin_trusted(request)
                if access is Access.LIVE_AUDIO and not trusted and gate.stream_from_any_origin:
                    request[FOREIGN_ORIGIN] = True  # may stream into a new session of its own, nothing more
                elif not trusted:
                    # Checked before any upgrade: a foreign page must not ride a visitor's network position.
                    what = "open caption sockets" if upgrade else "use this endpoint"
                    message = f"this page's origin may not {what} here (see auth.allowed_origins)"
                    raise AuthError(403, "forbidden_origin", message)
                if access is Access.ADMIN and not gate.admin_reachable(request):
                    raise AuthError(
                        403,
                        "forbidden",
                        "admin endpoints need auth.admin_tokens when this server is reachable beyond this host "
                        "or behind a proxy",
                    )
                request[PRINCIPAL] = gate.identify(request, admin=access is Access.ADMIN)
        except AuthError as exc:
            self.ctx.metrics.errors.labels(exc.code).inc()
            request[REFUSED] = exc.code  # said in the request's one access-log line
            if upgrade and exc.code not in ("forbidden_origin", "forbidden_host"):
                # browsers cannot read a refused handshake: say it in the socket, then close
                return await refuse_socket(request, exc.code, exc.message)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            if exc.status == 429:
                headers = {"Retry-After": str(exc.retry_after_s)}
            return web.json_response({"code": exc.code, "error": exc.message}, status=exc.status, headers=headers)
        return await self._handle(request, handler, upgrade)

    async def _handle(self, request: web.Request, handler: Handler, upgrade: bool) -> web.StreamResponse:
        watchdog = None
        if request.body_exists and not upgrade:
            watchdog = asyncio.create_task(self._watch_body(request))
        try:
            return await handler(request)
        except OSError as exc:
            if watchdog is not None and watchdog.done() and not watchdog.cancelled() and watchdog.result():
                raise web.HTTPRequestTimeout() from None  # the socket is closed already; nothing is sent
            if exc.errno not in FD_ERRORS:
                raise
            log.warning("out of file descriptors: %s %s answered 503", request.method, request.path)
            return web.json_response(
                {"code": "busy", "error": "server busy: out of file descriptors, try again later"},
                status=503,
                headers={"Retry-After": "5"},
            )
        finally:
            if watchdog is not None:
                watchdog.cancel()

    async def _watch_body(self, request: web.Request) -> bool:
        """Close a connection whose request body arrives slower than server.body_min_kb_s per
        server.body_timeout_s window (or not at all) while the handler waits for it."""
        window = self.config.server.body_timeout_s
        least = self.config.server.body_min_kb_s * 1024 * window
        content = request.content
        seen = content.total_bytes
        while True:
            await asyncio.sleep(window)
            if content.is_eof():
                return False
            got, seen = content.total_bytes - seen, content.total_bytes
            # Bytes still buffered: the handler is the slow one (flow control), not the client.
            waiting_for_client = content._size == 0  # aiohttp has no public "bytes buffered"
            if waiting_for_client and (got == 0 or got < least):
                log.warning(
                    "%s: request body too slow (%d bytes in %.0f s): connection closed", request.remote, got, window
                )
                if request.transport is not None:
                    request.transport.close()
                return True


async def refuse_socket(request: web.Request, code: str, message: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("binary",))
    await ws.prepare(request)
    # Before any first message the client may be one of FunASR's: FunASR's shape, ending it.
    await ws.send_str(protocol.encode(protocol.for_funasr_client(protocol.refusal(code, message))))
    await closing.close(ws, closing.refused(code, message))
    return ws

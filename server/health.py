"""What the server says about itself: /healthz (ok or degraded, and why), /metrics (Prometheus),
and the admin page's data: devices, engines, batch sizes, and the "clear GPU cache" action."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from server.context import ServerContext

if TYPE_CHECKING:
    from server.cluster_figures import LocalFigures

log = logging.getLogger(__name__)


class Health:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/admin/devices", self.admin_devices)
        app.router.add_post("/admin/gpu/clear-cache", self.clear_gpu_cache)

    def local_figures(self) -> LocalFigures:
        from server.cluster_figures import LocalFigures  # with Redis's and the stores' clients: loaded at startup

        ctx = self.ctx
        return LocalFigures(
            sessions=sum(c.stream is not None for c in ctx.connections),  # one stream per connection
            followers=ctx.subscribers,
            connections=len(ctx.connections),
        )

    async def healthz(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        stats = ctx.executor.stats
        backlog_s = ctx.vad_backlog_s
        overloaded, vad_behind = ctx.overloaded, ctx.vad_behind(backlog_s)
        shared = ctx.sessions.health()
        healthy = not overloaded and not vad_behind and not (ctx.jobs and not ctx.jobs.healthy)
        healthy = healthy and (shared is None or shared["redis"] == "ok")
        healthy = healthy and ctx.executor.backend_healthy  # a remote inference pool is reachable
        here = self.local_figures()
        return web.json_response(
            {
                "status": "ok" if healthy else "degraded",
                "overloaded": overloaded,
                "backlog_ms": round(ctx.executor.oldest_final_wait_s * 1000),
                "vad_behind": vad_behind,
                "vad_backlog_ms": round(backlog_s * 1000),
                "engine": ctx.engine_name,
                "model": ctx.model_name,
                "device": ctx.device,
                "job_engines": [
                    {"engine": name, "model": engine.model}
                    for name, engine in ctx.executor.engines.items()
                    if name != ctx.engine_name
                ],
                "connections": len(ctx.connections),
                "queue_depth": ctx.executor.queue_depth,
                "uptime_s": round(time.monotonic() - ctx.started, 1),
                "decoded": stats.decoded,
                "batches": stats.batches,
                "partials_dropped": stats.partials_dropped,
                "decode_errors": stats.errors,
                "cpu_fallbacks": stats.cpu_fallbacks,
                "executor_restarts": stats.restarts,
                "inference_backend": ctx.executor.backend_figures(),
                "history": {
                    "ok": ctx.jobs.healthy,
                    "error": ctx.jobs.last_error,
                    "path": str(ctx.jobs.store.path),
                }
                if ctx.jobs
                else None,
                "sessions": shared,  # with [cluster] redis_url: Redis reachable, writes waiting for it
                "live_sessions": here.sessions,
                "followers": here.followers,
                # all front ends together (this one alone without Redis), files from the job store
                "cluster": await ctx.figures.current() if ctx.figures is not None else None,
            }
        )

    async def metrics(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        ctx.metrics.queue_depth.set(ctx.executor.queue_depth)
        ctx.metrics.backlog.set(ctx.executor.oldest_final_wait_s)
        ctx.metrics.vad_backlog.set(ctx.vad_backlog_s)
        ctx.metrics.queued_replies.set(sum(len(c.outbox) for c in ctx.connections))
        ctx.metrics.followers.set(ctx.subscribers)
        ctx.metrics.pool_up.set(ctx.executor.backend_healthy)
        shared = ctx.sessions.health()
        if shared is not None:  # with [cluster] redis_url
            ctx.metrics.observe_redis(shared)
        here = self.local_figures()
        ctx.metrics.live_sessions.set(here.sessions)
        if ctx.figures is not None:
            ctx.metrics.observe_cluster(await ctx.figures.current())
        return web.Response(body=ctx.metrics.render(), content_type="text/plain", charset="utf-8")

    async def clear_gpu_cache(self, request: web.Request) -> web.Response:
        report = await self.ctx.executor.clear_device_cache()
        log.info("GPU cache clear requested: %s", report)
        return web.json_response(report)

    async def admin_devices(self, request: web.Request) -> web.Response:
        """The admin page's data: devices, engines with their memory, and the batch sizes."""
        inf = self.ctx.config.inference
        report = await self.ctx.executor.device_report()
        report["requested_device"] = inf.device
        report["batch"] = {
            "max_batch_size": inf.max_batch_size,
            "background_batch_size": inf.background_batch_size,
            "vad_max_batch_size": inf.vad_max_batch_size,
            "max_wait_ms": inf.max_wait_ms,
        }
        return web.json_response(report)

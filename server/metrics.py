"""Prometheus metrics for one server instance (its own registry, so tests can run several)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.5,
    0.75,
    1,
    1.5,
    2,
    3,
    5,
    10,
    30,
    60,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("caption_connections", "Open WebSocket connections", registry=r)
        self.audio_seconds = Counter("caption_audio_seconds", "Audio received, in seconds at 16 kHz", registry=r)
        self.segments = Counter("caption_segments", "Segments closed", ["reason"], registry=r)
        self.finals = Counter("caption_finals", "Final captions produced", registry=r)
        self.partials = Counter("caption_partials", "Partial captions sent", registry=r)
        self.partials_skipped = Counter(
            "caption_partials_skipped", "Partial re-decodes not requested because the executor was behind", registry=r
        )
        self.errors = Counter("caption_errors", "Errors reported to clients", ["code"], registry=r)
        self.disconnects = Counter("caption_disconnects", "Connections closed by the server", ["reason"], registry=r)
        self.queue_depth = Gauge("caption_queue_depth", "Decode requests waiting", registry=r)
        self.queued_replies = Gauge(
            "caption_queued_replies", "Replies waiting to be sent, over all connections", registry=r
        )
        self.backlog = Gauge("caption_backlog_seconds", "Age of the oldest waiting final", registry=r)
        self.followers = Gauge("caption_followers", "Caption displays (/subscribe) on this front end", registry=r)
        self.live_sessions = Gauge("caption_live_sessions", "Sessions streamed into on this front end", registry=r)
        # On all front ends together (this one alone without cluster.redis_url); NaN while Redis is away.
        self.cluster = {
            name: Gauge(f"caption_cluster_{name}", f"{what} on all front ends together", registry=r)
            for name, what in (
                ("front_ends", "Front ends"),
                ("sessions", "Sessions streamed into"),
                ("followers", "Caption displays (/subscribe)"),
                ("connections", "Open WebSocket connections"),
            )
        }
        self.files_pending = Gauge(
            "caption_files_pending",
            "Files still to transcribe in the job store (shared by the front ends with cluster.postgres_url)",
            ["status"],
            registry=r,
        )
        self._redis: tuple[Gauge, Gauge, Gauge] | None = None  # made on first use: with [cluster] redis_url only
        self.vad_backlog = Gauge(
            "caption_vad_backlog_seconds",
            "Audio received but not yet through VAD (median over live streams)",
            registry=r,
        )
        self.batch_size = Histogram(
            "caption_batch_size", "Requests per model call", ["kind"], buckets=BATCH_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "caption_stage_seconds",
            "Time per stage: vad and decode are model calls; queue is waiting for the model; "
            "endpoint is from the arrival of a segment's last speech to its close (silence_ms at best)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Histogram(
            "caption_stream_lag_seconds",
            "How far behind real time a stream's audio is processed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        # [inference] backend = "ray": the shared pool, per replica as this front end's calls saw it.
        self.pool_up = Gauge(
            "caption_pool_up", "1 while the decode backend can decode (a Ray pool is reachable)", registry=r
        )
        self.pool_up.set(1)
        self.pool_batch_size = Histogram(
            "caption_pool_batch_size",
            "Requests per model call in a pool replica (batches of several front ends merged)",
            ["replica"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.pool_queued = Gauge(
            "caption_pool_queued",
            "Batches waiting in a replica when it took this front end's last one",
            ["replica"],
            registry=r,
        )
        self.pool_seconds = Histogram(
            "caption_pool_seconds",
            "Pool time per batch: decode and queue in a replica, call = this front end's whole remote call",
            ["replica", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe_pool(self, outcome: Any, call_s: float) -> None:
        """One answered call to the pool (an inference.batch_decoder.BatchOutcome)."""
        replica = outcome.replica
        self.pool_batch_size.labels(replica).observe(outcome.size)
        self.pool_queued.labels(replica).set(outcome.queued)
        self.pool_seconds.labels(replica, "decode").observe(outcome.decode_s)
        self.pool_seconds.labels(replica, "queue").observe(outcome.queue_s)
        self.pool_seconds.labels(replica, "call").observe(call_s)

    def observe_batch(self, kind: str, size: int, seconds: float) -> None:
        self.batch_size.labels(kind).observe(size)
        self.stage.labels(kind).observe(seconds)

    def observe_redis(self, health: dict) -> None:
        """The shared session store's state (RedisSessions.health()): whether this front end
        reaches Redis, and its writes waiting for it (absent without Redis: no false alarm)."""
        if self._redis is None:
            r = self.registry
            self._redis = (
                Gauge("caption_redis_up", "1 while Redis answers this front end", registry=r),
                Gauge("caption_redis_queued_writes", "Redis writes waiting in memory", registry=r),
                Gauge(
                    "caption_redis_dropped_writes", "Redis writes dropped past cluster.max_queued_writes", registry=r
                ),
            )
        up, queued, dropped = self._redis
        up.set(health["redis"] == "ok")
        queued.set(health["queued_writes"])
        dropped.set(health["dropped_writes"])

    def observe_cluster(self, figures: dict) -> None:
        """ClusterFigures.current(): an unknown figure (None) is NaN, not a false zero."""
        for name, gauge in self.cluster.items():
            gauge.set(_or_nan(figures[name]))
        files = figures["files"] or {}
        for status in ("queued", "running"):
            self.files_pending.labels(status).set(_or_nan(files.get(status)))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value

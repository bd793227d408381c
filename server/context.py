"""What every connection and route of one server shares: its config, the executor, the sessions,
the job runner, the counters. Composed once by server.app's startup; typed so that a caller uses
only what these parts declare."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.auth import Gate
from server.metrics import Metrics
from server.sessions import SessionStore
from settings.config import Config

if TYPE_CHECKING:  # (types only: the server's I/O modules never import torch or the models)
    from inference.executor import InferenceExecutor
    from jobs.runner import JobRunner
    from server.cluster_figures import ClusterFigures
    from server.cluster_limits import ClusterConnections
    from server.connection import Connection


@dataclass
class ServerContext:
    config: Config
    executor: InferenceExecutor
    engine_name: str  # the live engine, as the ready reply and /healthz name it
    model_name: str
    device: str
    sessions: SessionStore  # this process's SessionHub, or RedisSessions ([cluster] redis_url)
    metrics: Metrics = field(default_factory=Metrics)
    hotwords: tuple[tuple[str, int], ...] = ()  # the server's hotword file, merged into every stream's
    cluster_connections: ClusterConnections | None = None  # connection limits counted cluster-wide (Redis)
    gate: Gate | None = None
    jobs: JobRunner | None = None  # batch queue and history database (set once the store is open)
    figures: ClusterFigures | None = None  # figures of all front ends
    connections: set[Connection] = field(default_factory=set)
    subscribers: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def overloaded(self) -> bool:
        """The executor is behind: finals wait longer than overload_backlog_ms."""
        return self.executor.oldest_final_wait_s * 1000 > self.config.inference.overload_backlog_ms

    def vad_behind(self, backlog_s: float) -> bool:
        """Speech detection cannot keep up (more streams than this machine can score): streams
        already open keep going, new ones are turned away until it catches up."""
        limit = self.config.inference.vad_overload_ms
        return bool(limit) and backlog_s * 1000 > limit

    @property
    def vad_backlog_s(self) -> float:
        """How far speech detection is behind: the median over the streams paced in real time."""
        now = time.monotonic()
        backlogs = [b for c in self.connections if (b := c.vad_backlog_s(now)) is not None]
        return statistics.median(backlogs) if backlogs else 0.0

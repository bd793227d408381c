"""Cluster-wide figures for /healthz and /metrics: live sessions, followers and connections summed
over every front end, and the files still to transcribe in the job store.

With [cluster] redis_url each front end writes its own figures into one Redis hash every
PUBLISH_INTERVAL_S (one HSET); a reader sums the hash, skipping (and removing) front ends whose
liveness key has expired, in one script. Without Redis this front end is the whole cluster. The
file counts are one count query on the runner's database thread, never on the event loop. What a
reader gets is cached for MAX_AGE_S, so health checks and scrapes hitting every front end cost Redis
and the database at most one read each per front end in that time."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from jobs.storage import DATABASE_ERRORS
from server.redis_link import RedisLink, RedisUnavailable
from server.redis_sessions import PREFIX, alive_key

log = logging.getLogger(__name__)

FIGURES_KEY = f"{PREFIX}:figures"  # hash: front end -> its LocalFigures as JSON
PUBLISH_INTERVAL_S = 2.0  # another front end's figures are at most this old (plus MAX_AGE_S)
MAX_AGE_S = 2.0
READ_TIMEOUT_S = 1.0  # a reader waits this long for Redis and the database, then gets the last figures

# KEYS[1]: the figures hash; ARGV[1]: the liveness key's prefix. The figures of live front ends;
# the entries of front ends gone without a word (kill -9, power) are removed.
LIVE_FIGURES = """
local out = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[1] .. all[i]) == 1 then
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"""


@dataclass(frozen=True)
class LocalFigures:
    """One front end's own: sessions streamed into now, /subscribe followers, live-audio sockets."""

    sessions: int
    followers: int
    connections: int


class ClusterFigures:
    def __init__(
        self,
        local: Callable[[], LocalFigures],
        pending_counts: Callable[[], Awaitable[dict[str, int]]] | None,
        link: RedisLink | None = None,
        node: str = "",
    ) -> None:
        """`pending_counts`: the store's count of files still to transcribe, awaited off the loop
        (None without a job store); `link` and `node`: this front end in Redis, if shared."""
        self._local, self._pending_counts = local, pending_counts
        self._link, self._node = link, node
        self._figures: dict[str, Any] | None = None
        self._read_at = -MAX_AGE_S
        self._reading: asyncio.Task | None = None
        self._publisher: asyncio.Task | None = None

    def start(self) -> None:
        if self._link is not None:
            self._publisher = asyncio.create_task(self._publish_loop(), name="cluster figures")

    def close(self) -> None:
        """Stopping: this front end no longer counts (written before its liveness key is deleted)."""
        if self._publisher is not None:
            self._publisher.cancel()
        if self._link is not None:
            self._link.write(("HDEL", FIGURES_KEY, self._node))

    async def current(self) -> dict[str, Any]:
        """The cluster's figures, at most MAX_AGE_S old while Redis and the database answer; a
        figure that could not be read is None."""
        if self._figures is None or time.monotonic() - self._read_at >= MAX_AGE_S:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.create_task(self._read())
            try:  # shielded: a reader that stops waiting leaves the read to finish for the next one
                self._figures = await asyncio.wait_for(asyncio.shield(self._reading), READ_TIMEOUT_S)
                self._read_at = time.monotonic()
            except TimeoutError:
                log.info("cluster figures: Redis or the database slower than %.1f s; last figures kept", READ_TIMEOUT_S)
        return self._figures or self._unknown()

    async def _read(self) -> dict[str, Any]:
        here = self._local()
        fronts, files = await asyncio.gather(self._front_ends(here), self._files())
        totals = {name: sum(f[name] for f in fronts) if fronts is not None else None for name in asdict(here)}
        return {"front_ends": len(fronts) if fronts is not None else None, **totals, "files": files}

    async def _front_ends(self, here: LocalFigures) -> list[dict[str, int]] | None:
        """Every live front end's figures (this one's as of now); None while Redis is away."""
        if self._link is None:
            return [asdict(here)]
        try:
            (flat,) = await self._link.read(("EVAL", LIVE_FIGURES, 1, FIGURES_KEY, alive_key("")))
        except RedisUnavailable as exc:
            log.info("cluster figures: %s", exc)
            return None
        others = {flat[i].decode(): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        others[self._node] = asdict(here)
        return list(others.values())

    async def _files(self) -> dict[str, int] | None:
        if self._pending_counts is None:
            return None
        try:
            return await self._pending_counts()
        except DATABASE_ERRORS as exc:  # the runner has logged it and marked history unhealthy
            log.info("cluster figures: files not counted: %s", exc)
            return None

    def _unknown(self) -> dict[str, Any]:
        return {"front_ends": None, **{name: None for name in LocalFigures.__dataclass_fields__}, "files": None}

    async def _publish_loop(self) -> None:
        assert self._link is not None
        while True:
            figures = json.dumps(asdict(self._local()))
            # droppable: while Redis is away a stale count is worth nothing; the next one replaces it
            self._link.write(("HSET", FIGURES_KEY, self._node, figures), droppable=True)
            await asyncio.sleep(PUBLISH_INTERVAL_S)

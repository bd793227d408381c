"""Where the executor's batches are decoded: the seam between scheduling and the models.

The executor (inference.executor) keeps the scheduler, loops, futures and supervision, and hands
each batch to a `DecodeBackend`. `LocalBackend` runs it on one decode thread of this process, as
the server always did; `inference.ray_backend.RayBackend` sends it to a shared pool of Ray Serve
replicas. Both run the same `BatchDecoder`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from inference.batch_decoder import BatchDecoder, BatchOutcome, Work
from inference.scheduler import Lane

T = TypeVar("T")


class PoolUnavailable(ConnectionError):
    """The remote inference pool cannot be reached (at start, or so long that finals were refused).
    An OSError, so run_server.py prints it as one line at start."""


class DecodeBackend(Protocol):
    # Batches the executor may have in flight at once (local: 1, the one decode thread).
    max_in_flight: int
    # While not healthy, partials are shed and at most this many finals wait (0: no bound).
    max_queued_finals: int

    @property
    def healthy(self) -> bool:
        """False while the backend cannot decode (the pool is unreachable); /healthz degraded."""
        ...

    async def decode(self, batch: Sequence[Work], lane: Lane) -> BatchOutcome:
        """Decode one batch; `lane` is its priority where batches of several callers meet. Raises
        only when no answer can come (PoolUnavailable); model failures are per-item results."""
        ...

    async def run_on_engines(self, fn: Callable[[BatchDecoder], T], between_calls: bool = True) -> T:
        """Run `fn` with the engines where they live: between model calls (clearing a device cache),
        or beside them (`between_calls=False`: reading a device report, never waiting for a decode)."""
        ...

    def figures(self) -> dict[str, Any]:
        """What /healthz shows about the backend."""
        ...

    async def close(self) -> None: ...


class LocalBackend:
    """The engines in this process, one decode thread (one device): one batch at a time."""

    max_in_flight = 1
    max_queued_finals = 0

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decode")

    @property
    def healthy(self) -> bool:
        return True

    async def decode(self, batch: Sequence[Work], lane: Lane) -> BatchOutcome:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.decoder.decode, batch)

    async def run_on_engines(self, fn: Callable[[BatchDecoder], T], between_calls: bool = True) -> T:
        pool = self._pool if between_calls else None
        return await asyncio.get_running_loop().run_in_executor(pool, fn, self.decoder)

    def figures(self) -> dict[str, Any]:
        return {"backend": "local"}

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

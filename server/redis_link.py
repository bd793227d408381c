"""One front end's link to Redis (cluster.redis_url): ordered writes through a bounded in-memory
queue, reads, and pub/sub channels that survive reconnects.

Redis going away must not stop live captions: writes wait here, in order, and go out when it
returns (at most `max_queued_writes` of them; past that the oldest are dropped, counted and
logged). Every write the cluster code queues is idempotent except PUBLISH, so a batch that failed
half-way is simply sent again; followers drop a final they already have.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 2.0  # a Redis that does not answer a connect this fast counts as away
COMMAND_TIMEOUT_S = 5.0
WRITE_BATCH = 256  # queued writes sent in one pipeline (one round trip)
RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0  # while Redis is away: first retry, then doubling up to this
LOST = (RedisConnectionError, RedisTimeoutError, OSError)


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached (at start: the server does not start; later: reads fall back)."""


def describe(url: str) -> str:
    """host:port of a Redis URL, never its password (the message goes to logs and terminals)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"


@dataclass
class _Write:
    seq: int
    commands: tuple[tuple[Any, ...], ...]


class RedisLink:
    def __init__(
        self,
        url: str,
        max_queued_writes: int,
        on_message: Callable[[str, bytes], None],
        on_resubscribed: Callable[[], Awaitable[None]],
        channels: tuple[str, ...] = (),
    ) -> None:
        """`on_message(channel, data)` for every pub/sub message; `on_resubscribed()` after the
        channels were subscribed again following an outage (messages sent meanwhile are lost:
        catch up from what Redis stores). `channels` are always listened to."""
        self.url = url
        self.max_queued_writes = max_queued_writes
        self._client = redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
            # One retry at once, on a fresh socket: after a Redis restart every pooled connection is
            # stale once. Retrying beyond that is this module's job (in order, without blocking anyone).
            retry=Retry(NoBackoff(), 1),
        )
        self._on_message = on_message
        self._on_resubscribed = on_resubscribed
        self._fixed_channels = channels
        self._queue: deque[_Write] = deque()
        self._seq = itertools.count(1)
        self._written = 0  # every write up to this sequence number is in Redis (or was dropped)
        self._waiting: list[tuple[int, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._channels: dict[str, int] = {}  # listened channel -> how many listeners here want it
        self._confirmations: dict[str, list[asyncio.Future]] = {}
        self._pubsub: redis.client.PubSub | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writer_ok = self._listener_ok = True
        self._listening = asyncio.Event()  # the first subscription is in place
        self.last_error: str | None = None
        self.dropped_writes = 0

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """RedisUnavailable with one line naming cluster.redis_url if Redis does not answer."""
        try:
            await asyncio.wait_for(self._client.ping(), CONNECT_TIMEOUT_S + 1)
        except (*LOST, TimeoutError) as exc:
            await self._client.aclose()
            reason = str(exc) or type(exc).__name__
            raise RedisUnavailable(f"cluster.redis_url: cannot reach Redis at {describe(self.url)}: {reason}") from None
        for loop in (self._write_loop, self._listen_loop):
            task = asyncio.create_task(loop(), name=f"redis {loop.__name__}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), CONNECT_TIMEOUT_S + 1)

    async def close(self, flush_s: float = 2.0) -> None:
        """Queued writes get `flush_s` to land; then the tasks and connections end."""
        if self._queue and self.healthy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.flushed(), flush_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._client.aclose()

    @property
    def healthy(self) -> bool:
        return self._writer_ok and self._listener_ok

    @property
    def queued_writes(self) -> int:
        return len(self._queue)

    def _lost(self, what: str, exc: BaseException) -> None:
        self.last_error = f"{what}: {exc or type(exc).__name__}"
        if self.healthy:
            log.warning(
                "Redis at %s unreachable (%s): live captions go on here; writes are queued (at most %d) "
                "until it returns",
                describe(self.url),
                self.last_error,
                self.max_queued_writes,
            )

    def _back(self) -> None:
        if self.healthy:
            self.last_error = None
            log.info("Redis at %s reachable again; %d queued writes to send", describe(self.url), len(self._queue))

    # --- writes ------------------------------------------------------------------------------
    def write(self, *commands: tuple[Any, ...], droppable: bool = False) -> int:
        """Queue commands to run in order (one pipeline with the writes around them); returns a
        sequence number for flushed(). `droppable` (live partials): not queued while Redis is away."""
        seq = next(self._seq)
        if droppable and not self._writer_ok:
            return seq
        self._queue.append(_Write(seq, commands))
        if len(self._queue) > self.max_queued_writes:
            self._queue.popleft()
            self.dropped_writes += 1
            if self.dropped_writes == 1 or self.dropped_writes % 1000 == 0:
                log.error(
                    "Redis away too long: %d queued writes dropped so far (cluster.max_queued_writes = %d)",
                    self.dropped_writes,
                    self.max_queued_writes,
                )
        self._wake.set()
        return seq

    async def flushed(self, seq: int | None = None) -> None:
        """Returns once every write queued up to `seq` (default: all so far) is in Redis."""
        seq = self._seq_now() if seq is None else seq
        if self._written >= seq:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((seq, future))
        await future

    def _seq_now(self) -> int:
        return self._queue[-1].seq if self._queue else self._written

    async def _write_loop(self) -> None:
        backoff = RETRY_MIN_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = list(itertools.islice(self._queue, WRITE_BATCH))
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for write in batch:
                        for command in write.commands:
                            pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
            except LOST as exc:
                self._lost("write", exc)
                self._writer_ok = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
                continue
            for result in results:
                if isinstance(result, Exception):  # a wrong command: sending it again will not help
                    log.error("Redis refused a write: %s", result)
            backoff = RETRY_MIN_S
            if not self._writer_ok:
                self._writer_ok = True
                self._back()
            last = batch[-1].seq  # writes queued meanwhile stay; ones dropped meanwhile are gone already
            while self._queue and self._queue[0].seq <= last:
                self._queue.popleft()
            self._written = max(self._written, last)
            done = [item for item in self._waiting if item[0] <= self._written]
            self._waiting = [item for item in self._waiting if item[0] > self._written]
            for _, future in done:
                if not future.done():
                    future.set_result(None)

    # --- reads -------------------------------------------------------------------------------
    async def read(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Run commands in one round trip; RedisUnavailable while Redis is away."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for command in commands:
                    pipe.execute_command(*command)
                return await pipe.execute()
        except LOST as exc:
            raise RedisUnavailable(f"Redis at {describe(self.url)}: {exc}") from exc

    # --- pub/sub -----------------------------------------------------------------------------
    async def listen(self, channel: str, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Messages on `channel` reach on_message from now on (returns once Redis confirmed, or at
        once while Redis is away: the channel is subscribed when it returns)."""
        self._channels[channel] = self._channels.get(channel, 0) + 1
        if self._channels[channel] > 1 or self._pubsub is None or not self._listener_ok:
            return
        future = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(channel, []).append(future)
        try:
            await self._pubsub.subscribe(channel)
            await asyncio.wait_for(future, timeout_s)
        except (*LOST, TimeoutError) as exc:
            self._lost("subscribe", exc)  # the listen loop subscribes it again when Redis is back

    def unlisten(self, channel: str) -> None:
        count = self._channels.get(channel, 0) - 1
        if count > 0:
            self._channels[channel] = count
            return
        self._channels.pop(channel, None)
        if self._pubsub is not None and self._listener_ok:
            task = asyncio.create_task(self._unsubscribe(channel))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(*LOST):
            if channel not in self._channels and self._pubsub is not None:
                await self._pubsub.unsubscribe(channel)

    @property
    def listened(self) -> list[str]:
        return list(self._channels)

    async def _listen_loop(self) -> None:
        backoff, outage = RETRY_MIN_S, False
        while True:
            pubsub = self._client.pubsub()
            try:
                wanted = {*self._fixed_channels, *self._channels}
                await pubsub.subscribe(*wanted)
                if added := set(self._channels) - wanted:  # listen() calls while that was under way
                    await pubsub.subscribe(*added)
                self._pubsub = pubsub
                self._listening.set()
                if not self._listener_ok:
                    self._listener_ok = True
                    self._back()
                if outage:
                    self._spawn(self._on_resubscribed())
                backoff, outage = RETRY_MIN_S, False
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    channel = message["channel"].decode()
                    if message["type"] == "message":
                        try:
                            self._on_message(channel, message["data"])
                        except Exception:
                            log.exception("a message on %s could not be handled", channel)
                    elif message["type"] == "subscribe":
                        for future in self._confirmations.pop(channel, []):
                            if not future.done():
                                future.set_result(None)
            except LOST as exc:
                self._lost("listen", exc)
                self._listener_ok, outage = False, True
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

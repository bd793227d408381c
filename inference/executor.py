"""One executor for every connection: batches decode requests and FSMN VAD chunks across streams.

Decoding runs on one worker thread (one device), VAD scoring on another, so a long decode never
delays endpointing. Finals are served before partials; a partial is dropped (its future gets
None) when a newer partial or the final for the same stream arrives. When the model raises, every
request in the failed call gets the exception, so no client ever waits forever.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inference.devices import is_out_of_memory
from inference.engines.base import DecodeOptions, DecodeResult, Engine

log = logging.getLogger(__name__)


class ExecutorClosed(RuntimeError):
    """The server is shutting down; the request was not decoded."""


@dataclass
class _Decode:
    stream_id: int
    segment_id: int
    audio: np.ndarray
    options: DecodeOptions
    future: asyncio.Future
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Score:
    state: Any
    samples: np.ndarray
    future: asyncio.Future


@dataclass
class ExecutorStats:
    batches: int = 0
    decoded: int = 0
    partials_dropped: int = 0
    errors: int = 0
    cpu_fallbacks: int = 0


class InferenceExecutor:
    def __init__(
        self,
        engine: Engine,
        scorer,
        max_batch_size: int,
        max_wait_ms: int,
        vad_max_batch_size: int,
        on_batch: Callable[[str, int, float], None] | None = None,
        vad_max_wait_ms: int = 0,
    ):
        """`on_batch(kind, size, seconds)` is told about every model call ("decode" or "vad")."""
        self.engine = engine
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.vad_max_batch_size = vad_max_batch_size
        self.vad_max_wait_s = vad_max_wait_ms / 1000
        self._on_batch = on_batch or (lambda kind, size, seconds: None)
        self.stats = ExecutorStats()
        self._finals: deque[_Decode] = deque()
        self._partials: dict[int, _Decode] = {}  # stream id -> newest pending partial
        self._scores: deque[_Score] = deque()
        self._decode_ready = asyncio.Event()
        self._score_ready = asyncio.Event()
        self._decode_pool = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self._vad_pool = ThreadPoolExecutor(1, thread_name_prefix="vad")
        self._tasks: list[asyncio.Task] = []
        self._closed = False
        # Requests handed to a worker thread and not yet answered; close() must answer them too.
        self._decoding: list[_Decode] = []
        self._scoring: list[_Score] = []
        self._stream_ids = itertools.count()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._decode_loop(), name="decode-loop"),
            asyncio.create_task(self._score_loop(), name="vad-loop"),
        ]

    async def close(self) -> None:
        """Stop the loops; anything still queued gets ExecutorClosed."""
        self._closed = True
        self._decode_ready.set()
        self._score_ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for request in [*self._finals, *self._partials.values(), *self._scores, *self._decoding, *self._scoring]:
            if not request.future.done():
                request.future.set_exception(ExecutorClosed("server shutting down"))
        self._finals.clear()
        self._partials.clear()
        self._scores.clear()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._vad_pool.shutdown(wait=False, cancel_futures=True)

    # --- submission ------------------------------------------------------------------------
    def new_stream_id(self) -> int:
        return next(self._stream_ids)

    @property
    def queue_depth(self) -> int:
        return len(self._finals) + len(self._partials)

    @property
    def oldest_final_wait_s(self) -> float:
        """How long the oldest queued final has waited: the executor's backlog, in time."""
        return time.monotonic() - self._finals[0].submitted if self._finals else 0.0

    def submit_final(
        self, stream_id: int, segment_id: int, audio: np.ndarray, options: DecodeOptions
    ) -> asyncio.Future:
        """Future resolving to the DecodeResult of a closed segment (never dropped)."""
        future = self._new_future()
        self._drop_partial(stream_id, up_to_segment=segment_id)
        self._finals.append(_Decode(stream_id, segment_id, audio, options, future))
        self._decode_ready.set()
        return future

    def submit_partial(
        self, stream_id: int, segment_id: int, audio: np.ndarray, options: DecodeOptions
    ) -> asyncio.Future:
        """Future resolving to a DecodeResult, or to None if a newer request made it stale."""
        future = self._new_future()
        self._drop_partial(stream_id)
        self._partials[stream_id] = _Decode(stream_id, segment_id, audio, options, future)
        self._decode_ready.set()
        return future

    def score_speech(self, state: Any, samples: np.ndarray) -> asyncio.Future:
        """Future resolving to FSMN speech probabilities for this stream's new samples."""
        future = self._new_future()
        self._scores.append(_Score(state, samples, future))
        self._score_ready.set()
        return future

    def forget_stream(self, stream_id: int) -> None:
        """The stream no longer wants partials (it ended); its finals stay queued."""
        self._drop_partial(stream_id)

    def _new_future(self) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ExecutorClosed("server shutting down"))
        return future

    def _drop_partial(self, stream_id: int, up_to_segment: int | None = None) -> None:
        pending = self._partials.get(stream_id)
        if pending is None or (up_to_segment is not None and pending.segment_id > up_to_segment):
            return
        del self._partials[stream_id]
        if not pending.future.done():
            pending.future.set_result(None)
        self.stats.partials_dropped += 1

    # --- decode loop -----------------------------------------------------------------------
    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._decode_ready.wait()
            if self._closed:
                break
            await self._gather_more()
            batch = self._take_batch()
            if not (self._finals or self._partials):
                self._decode_ready.clear()
            batch = [r for r in batch if not r.future.done()]  # e.g. cancelled by a vanished caller
            if not batch:
                continue
            started = time.monotonic()
            self._decoding = batch
            try:
                results = await loop.run_in_executor(self._decode_pool, self._decode_batch, batch)
            except Exception as exc:  # the model raised for every attempt: tell every waiter
                self.stats.errors += 1
                log.exception("decode of %d request(s) failed", len(batch))
                results = [exc] * len(batch)
            self._decoding = []
            elapsed = time.monotonic() - started
            self.stats.batches += 1
            self.stats.decoded += len(batch)
            self._on_batch("decode", len(batch), elapsed)
            for request, result in zip(batch, results):
                if not isinstance(result, BaseException):
                    timing = {
                        "queue_ms": round((started - request.submitted) * 1000),
                        "decode_ms": round(elapsed * 1000),
                    }
                    result = replace(result, extra={**result.extra, **timing})
                _answer(request.future, result)

    async def _gather_more(self) -> None:
        # Wait (up to max_wait after the oldest request) for a fuller batch; a full batch goes at once.
        oldest = min((r.submitted for r in itertools.chain(self._finals, self._partials.values())), default=None)
        if oldest is None:
            return
        deadline = oldest + self.max_wait_s
        while self.queue_depth < self.max_batch_size and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._decode_ready.clear()
            try:
                await asyncio.wait_for(self._decode_ready.wait(), remaining)
            except TimeoutError:
                return
        self._decode_ready.set()

    def _take_batch(self) -> list[_Decode]:
        batch: list[_Decode] = []
        while self._finals and len(batch) < self.max_batch_size:
            batch.append(self._finals.popleft())
        for stream_id in list(self._partials):
            if len(batch) >= self.max_batch_size:
                break
            batch.append(self._partials.pop(stream_id))
        return batch

    def _decode_batch(self, batch: Sequence[_Decode]) -> list[DecodeResult | BaseException]:
        """Runs on the decode thread. Returns one result or exception per request."""
        audios = [r.audio for r in batch]
        options = [r.options for r in batch]
        try:
            return self._decode_with_oom_recovery(self.engine, audios, options)
        except Exception as exc:
            if len(batch) == 1 or is_out_of_memory(exc):
                raise
            # Isolate the failing request(s): one bad segment must not cost the others theirs.
            log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            out: list[DecodeResult | BaseException] = []
            for audio, option in zip(audios, options):
                try:
                    out.extend(self._decode_with_oom_recovery(self.engine, [audio], [option]))
                except Exception as single:
                    out.append(single)
            return out

    def _decode_with_oom_recovery(self, engine: Engine, audios, options) -> list[DecodeResult]:
        try:
            results = engine.decode(audios, options)
        except Exception as exc:
            if not (is_out_of_memory(exc) and engine.device.startswith("cuda")):
                raise
            if len(audios) > 1:
                half = len(audios) // 2
                log.warning("CUDA out of memory on a batch of %d; splitting and retrying", len(audios))
                return self._decode_with_oom_recovery(engine, audios[:half], options[:half]) + (
                    self._decode_with_oom_recovery(engine, audios[half:], options[half:])
                )
            log.warning("CUDA out of memory on a single request; decoding it on the CPU")
            self.stats.cpu_fallbacks += 1
            results = engine.on_cpu().decode(audios, options)
        if len(results) != len(audios):
            raise RuntimeError(f"engine returned {len(results)} results for {len(audios)} inputs")
        return results

    # --- VAD loop --------------------------------------------------------------------------
    async def _score_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._score_ready.wait()
            if self._closed:
                break
            # Gather chunks for a moment: one call for many streams costs little more than one call
            # for a single stream, and at this step's scale a few ms do not matter to endpointing.
            if self.vad_max_wait_s > 0 and len(self._scores) < self.vad_max_batch_size:
                await asyncio.sleep(self.vad_max_wait_s)
            batch = [self._scores.popleft() for _ in range(min(len(self._scores), self.vad_max_batch_size))]
            if not self._scores:
                self._score_ready.clear()
            if not batch:
                continue
            self._scoring = batch
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(
                    self._vad_pool, self.scorer.score, [(w.state, w.samples) for w in batch]
                )
            except Exception as exc:
                log.exception("VAD scoring failed")
                results = [exc] * len(batch)
            self._scoring = []
            self._on_batch("vad", len(batch), time.monotonic() - started)
            for work, result in zip(batch, results):
                _answer(work.future, result)


def _answer(future: asyncio.Future, result: Any) -> None:
    """Resolve a caller's future with a result, or with the exception that stands for one."""
    if future.done():  # the caller gave up (disconnected) or close() answered it already
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

"""One executor for every connection: batches decode requests and FSMN VAD chunks across streams.

Decoding runs on one worker thread (one device), VAD scoring on another, so a long decode never
delays endpointing. Finals are served first, then streaming steps (engines with a streaming model:
one chunk per stream per call, in order, never dropped - the model's cache depends on every chunk),
then partial re-decodes; a partial is dropped (its future gets None) when a newer partial or the
final for the same stream arrives. Finals get inverse text normalisation here, for every engine.
When the model raises, every request in the failed call gets the exception, so no client ever
waits forever.

Besides the live engine the executor may hold job engines (config jobs.engines), which files ask for
by name. They run on the same decode thread, only when no live work waits: first file requests that
are answered at once (the OpenAI endpoint), then queued job segments. A batch never mixes engines.
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

# VAD batches handed to the scorer at once (see _score_loop).
VAD_BATCHES_IN_FLIGHT = 2


class ExecutorClosed(RuntimeError):
    """The server is shutting down; the request was not decoded."""


class ExecutorCrashed(RuntimeError):
    """The batching loop failed while this request was in flight; the loop was restarted."""


class UnknownEngine(ValueError):
    """A request named an engine this executor does not hold."""


@dataclass
class _Decode:
    stream_id: int
    segment_id: int
    audio: np.ndarray
    options: DecodeOptions
    future: asyncio.Future
    engine: str = ""  # name of the engine that decodes it (set on submission)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class _Step:
    """One chunk for an engine's streaming model; `state` is that stream's cache."""

    stream_id: int
    segment_id: int
    state: Any
    audio: np.ndarray
    is_final: bool
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
    restarts: int = 0


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
        normalizer: Callable[[str, str | None], str] | None = None,
        job_engines: Sequence[Engine] = (),
    ):
        """`on_batch(kind, size, seconds)` is told about every model call ("decode", "stream" or "vad").
        `normalizer(text, language)` is the inverse text normaliser applied to finals that ask for it.
        `job_engines`: more engines that file requests may name (the live `engine` is always one)."""
        self.engine = engine
        self.engines: dict[str, Engine] = {engine.name: engine}  # by name; the live engine first
        for extra in job_engines:
            self.engines.setdefault(extra.name, extra)
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.vad_max_batch_size = vad_max_batch_size
        self.vad_max_wait_s = vad_max_wait_ms / 1000
        self._on_batch = on_batch or (lambda kind, size, seconds: None)
        self.stats = ExecutorStats()
        self._finals: deque[_Decode] = deque()
        self._partials: dict[int, _Decode] = {}  # stream id -> newest pending partial
        self._steps: dict[int, deque[_Step]] = {}  # stream id -> its streaming chunks, in order
        self._on_demand: deque[_Decode] = deque()  # files answered at once with a job engine: after live work
        self._background: deque[_Decode] = deque()  # file transcription: only when no other work waits
        self._normalizer = normalizer
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
            asyncio.create_task(self._supervise(self._decode_loop, "_decoding"), name="decode-loop"),
            asyncio.create_task(self._supervise(self._score_loop, "_scoring"), name="vad-loop"),
        ]

    async def close(self) -> None:
        """Stop the loops; anything still queued gets ExecutorClosed."""
        self._closed = True
        self._decode_ready.set()
        self._score_ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        steps = [step for queue in self._steps.values() for step in queue]
        waiting = [
            *self._finals, *self._partials.values(), *steps, *self._on_demand, *self._background, *self._scores,
            *self._decoding, *self._scoring,
        ]  # fmt: skip
        for request in waiting:
            if not request.future.done():
                request.future.set_exception(ExecutorClosed("server shutting down"))
        self._finals.clear()
        self._partials.clear()
        self._steps.clear()
        self._on_demand.clear()
        self._background.clear()
        self._scores.clear()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._vad_pool.shutdown(wait=False, cancel_futures=True)

    # --- submission ------------------------------------------------------------------------
    def new_stream_id(self) -> int:
        return next(self._stream_ids)

    @property
    def queue_depth(self) -> int:
        return len(self._finals) + len(self._partials) + sum(len(q) for q in self._steps.values())

    @property
    def streaming(self) -> bool:
        """The engine has a streaming model: partials come from submit_step, not re-decodes."""
        return getattr(self.engine, "streaming", False)

    def engine_name(self, name: str | None = None) -> str:
        """The engine a request naming `name` gets (None = the live engine); UnknownEngine if none."""
        if name is None or name == self.engine.name:
            return self.engine.name
        if name not in self.engines:
            raise UnknownEngine(f"engine {name!r} is not loaded; loaded: {', '.join(self.engines)}")
        return name

    def new_stream_state(self, *args: Any) -> Any:
        """A fresh cache for the engine's streaming model (one per stream and segment)."""
        return self.engine.new_stream_state(*args)

    @property
    def oldest_final_wait_s(self) -> float:
        """How long the oldest queued final has waited: the executor's backlog, in time."""
        return time.monotonic() - self._finals[0].submitted if self._finals else 0.0

    def submit_final(
        self, stream_id: int, segment_id: int, audio: np.ndarray, options: DecodeOptions, engine: str | None = None
    ) -> asyncio.Future:
        """Future resolving to the DecodeResult of a closed segment (never dropped). `engine` names a
        job engine for a file answered at once: decoded after live work, before queued job segments."""
        name = self.engine_name(engine)
        future = self._new_future()
        if name != self.engine.name:
            self._on_demand.append(_Decode(stream_id, segment_id, audio, options, future, name))
            self._decode_ready.set()
            return future
        self._drop_partial(stream_id, up_to_segment=segment_id)
        self._drop_steps(stream_id, up_to_segment=segment_id)
        self._finals.append(_Decode(stream_id, segment_id, audio, options, future, name))
        self._decode_ready.set()
        return future

    def submit_partial(
        self, stream_id: int, segment_id: int, audio: np.ndarray, options: DecodeOptions
    ) -> asyncio.Future:
        """Future resolving to a DecodeResult, or to None if a newer request made it stale."""
        future = self._new_future()
        self._drop_partial(stream_id)
        self._partials[stream_id] = _Decode(stream_id, segment_id, audio, options, future, self.engine.name)
        self._decode_ready.set()
        return future

    def submit_background(self, audio: np.ndarray, options: DecodeOptions, engine: str | None = None) -> asyncio.Future:
        """A segment of a file being transcribed by `engine` (None = the live engine): decoded in
        batches of its own, and only while no live final, streaming chunk or partial is waiting
        (live captions keep priority)."""
        name = self.engine_name(engine)
        future = self._new_future()
        self._background.append(_Decode(-1, -1, audio, options, future, name))
        self._decode_ready.set()
        return future

    @property
    def background_depth(self) -> int:
        return len(self._background)

    def submit_step(
        self,
        stream_id: int,
        segment_id: int,
        state: Any,
        audio: np.ndarray,
        is_final: bool,
        options: DecodeOptions,
    ) -> asyncio.Future:
        """Future resolving to the streaming model's DecodeResult after this chunk: the segment's
        text so far (with is_final, its finished text). Chunks of one stream run in submission order.
        A chunk whose segment gets an offline final first resolves to None (that final replaces it)."""
        future = self._new_future()
        step = _Step(stream_id, segment_id, state, audio, is_final, options, future)
        self._steps.setdefault(stream_id, deque()).append(step)
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
        if not any(step.is_final for step in self._steps.get(stream_id, ())):
            self._drop_steps(stream_id)

    async def clear_device_cache(self) -> dict:
        """Empty the CUDA cache on the decode thread, between model calls (never under one)."""
        from inference.devices import clear_cache

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode_pool, clear_cache, self.engine.device)

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

    def _drop_steps(self, stream_id: int, up_to_segment: int | None = None) -> None:
        queue = self._steps.get(stream_id)
        if not queue:
            return
        keep: deque[_Step] = deque()
        for step in queue:
            if step.is_final or (up_to_segment is not None and step.segment_id > up_to_segment):
                keep.append(step)
            elif not step.future.done():
                step.future.set_result(None)
        if keep:
            self._steps[stream_id] = keep
        else:
            del self._steps[stream_id]

    # --- decode loop -----------------------------------------------------------------------
    async def _supervise(self, run_loop, in_flight: str) -> None:
        """Restart a batching loop that died from a bug; what it held in flight gets an error."""
        while not self._closed:
            try:
                await run_loop()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.restarts += 1
                requests = getattr(self, in_flight)
                setattr(self, in_flight, [])
                log.exception(
                    "%s crashed with %d request(s) in flight; restarting it", run_loop.__name__, len(requests)
                )
                for request in requests:
                    _answer(request.future, ExecutorCrashed(f"inference loop failed ({type(exc).__name__}); retry"))
                await asyncio.sleep(0.1)  # a loop that fails at once must not spin

    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._decode_ready.wait()
            if self._closed:
                break
            await self._gather_more()
            batch = self._take_batch()
            # _gather_more may have cleared the flag; whatever _take_batch left (a stream's next
            # streaming chunk, more requests than one batch) must run without waiting for new work.
            if self._finals or self._partials or self._steps or self._on_demand or self._background:
                self._decode_ready.set()
            else:
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
            elapsed = time.monotonic() - started
            self.stats.batches += 1
            self.stats.decoded += len(batch)
            steps = sum(isinstance(r, _Step) for r in batch)
            if steps:
                self._on_batch("stream", steps, elapsed)
            if len(batch) > steps:
                self._on_batch("decode", len(batch) - steps, elapsed)
            for request, result in zip(batch, results):
                if not isinstance(result, BaseException) and result is not None:
                    timing = {
                        "queue_ms": round((started - request.submitted) * 1000),
                        "decode_ms": round(elapsed * 1000),
                        "engine": getattr(request, "engine", "") or self.engine.name,  # steps: the live engine
                    }
                    result = replace(result, extra={**result.extra, **timing})
                _answer(request.future, result)
            self._decoding = []

    async def _gather_more(self) -> None:
        # Wait (up to max_wait after the oldest request) for a fuller batch; a full batch goes at once.
        waiting = itertools.chain(
            self._finals, self._partials.values(), (q[0] for q in self._steps.values()), self._on_demand,
            self._background,
        )  # fmt: skip
        oldest = min((r.submitted for r in waiting), default=None)
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

    def _take_batch(self) -> list[_Decode | _Step]:
        batch: list[_Decode | _Step] = []
        while self._finals and len(batch) < self.max_batch_size:
            batch.append(self._finals.popleft())
        # One chunk per stream: a stream's next chunk needs the cache this one leaves behind.
        for stream_id in sorted(self._steps, key=lambda sid: self._steps[sid][0].submitted):
            if len(batch) >= self.max_batch_size:
                break
            queue = self._steps[stream_id]
            batch.append(queue.popleft())
            if not queue:
                del self._steps[stream_id]
        for stream_id in list(self._partials):
            if len(batch) >= self.max_batch_size:
                break
            batch.append(self._partials.pop(stream_id))
        # Then file work, oldest first: one engine's requests per batch.
        for queue in (self._on_demand, self._background):
            if not batch and queue:
                _take_same_engine(queue, self.max_batch_size, batch)
        return batch

    def _decode_batch(self, batch: Sequence[_Decode | _Step]) -> list[DecodeResult | BaseException]:
        """Runs on the decode thread. Returns one result or exception per request, in batch order."""
        decodes = [r for r in batch if isinstance(r, _Decode)]
        steps = [r for r in batch if isinstance(r, _Step)]
        answers: dict[int, DecodeResult | BaseException] = {}
        if decodes:
            try:
                decoded = self._decode_requests(decodes)
            except Exception as exc:  # every attempt failed (e.g. out of memory on the CPU too)
                log.exception("decode of %d request(s) failed", len(decodes))
                self.stats.errors += 1
                decoded = [exc] * len(decodes)
            answers.update(zip(map(id, decodes), decoded))
        if steps:
            answers.update(zip(map(id, steps), self._stream_steps(steps)))
        return [self._normalize(r, answers[id(r)]) for r in batch]

    def _normalize(self, request: _Decode | _Step, result: DecodeResult | BaseException):
        # Finals only: partials are provisional, and rewriting them would make stable text move.
        final = request.is_final if isinstance(request, _Step) else not request.options.partial
        if isinstance(result, BaseException) or not final or self._normalizer is None or not request.options.itn:
            return result
        if result.extra.get("itn_done"):  # the engine normalised already (SenseVoice does its own)
            return result
        language = result.extra.get("language") or request.options.language
        return replace(result, text=self._normalizer(result.text, language))

    def _stream_steps(self, steps: Sequence[_Step]) -> list[DecodeResult | BaseException]:
        try:
            results = self.engine.stream([(s.state, s.audio, s.is_final, s.options) for s in steps])
            if len(results) != len(steps):
                raise RuntimeError(f"engine returned {len(results)} results for {len(steps)} chunks")
            return results
        except Exception as exc:
            if len(steps) == 1:
                return [exc]
            log.warning("streaming batch of %d failed (%s); retrying one by one", len(steps), exc)
            return [self._stream_steps([step])[0] for step in steps]

    def _decode_requests(self, batch: Sequence[_Decode]) -> list[DecodeResult | BaseException]:
        names = {r.engine for r in batch}
        if len(names) != 1:  # _take_batch never builds one; it would decode with the wrong model
            raise RuntimeError(f"a decode batch mixes engines: {sorted(names)}")
        engine = self.engines[names.pop()]
        audios = [r.audio for r in batch]
        options = [r.options for r in batch]
        try:
            return self._decode_with_oom_recovery(engine, audios, options)
        except Exception as exc:
            if len(batch) == 1 or is_out_of_memory(exc):
                raise
            # Isolate the failing request(s): one bad segment must not cost the others theirs.
            log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            out: list[DecodeResult | BaseException] = []
            for audio, option in zip(audios, options):
                try:
                    out.extend(self._decode_with_oom_recovery(engine, [audio], [option]))
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
        # Up to VAD_BATCHES_IN_FLIGHT batches at once: the next is in the scorer's pipe while one
        # is scored, so the scorer never idles while the event loop is busy elsewhere. A stream
        # has one score in flight at most, so its batches never overtake each other.
        slots = asyncio.Semaphore(VAD_BATCHES_IN_FLIGHT)
        running: set[asyncio.Task] = set()
        try:
            while not self._closed:
                await self._score_ready.wait()
                if self._closed:
                    break
                await slots.acquire()
                # Gather chunks for a moment: one call for many streams costs little more than one
                # call for a single stream, and at this step's scale a few ms do not matter.
                if self.vad_max_wait_s > 0 and len(self._scores) < self.vad_max_batch_size:
                    await asyncio.sleep(self.vad_max_wait_s)
                batch = [self._scores.popleft() for _ in range(min(len(self._scores), self.vad_max_batch_size))]
                if not self._scores:
                    self._score_ready.clear()
                if not batch:
                    slots.release()
                    continue
                task = asyncio.create_task(self._score_batch(batch))
                running.add(task)
                task.add_done_callback(lambda done: (running.discard(done), slots.release()))
        finally:
            for task in running:
                task.cancel()

    async def _score_batch(self, batch: list[_Score]) -> None:
        self._scoring.extend(batch)
        started = time.monotonic()
        work = [(w.state, w.samples) for w in batch]
        try:
            if hasattr(self.scorer, "score_async"):  # a worker process: the loop waits on its pipe
                results = await self.scorer.score_async(work)
            else:
                results = await asyncio.get_running_loop().run_in_executor(self._vad_pool, self.scorer.score, work)
        except Exception as exc:  # (cancelled: close() answers what is left in _scoring)
            log.exception("VAD scoring failed")
            results = [exc] * len(batch)
        scored = {id(w) for w in batch}
        self._scoring = [w for w in self._scoring if id(w) not in scored]
        self._on_batch("vad", len(batch), time.monotonic() - started)
        for work, result in zip(batch, results):
            _answer(work.future, result)


def _take_same_engine(queue: deque[_Decode], limit: int, batch: list) -> None:
    """Move up to `limit` requests for the engine of the queue's oldest one into `batch`, in order;
    requests for other engines keep their places."""
    engine = queue[0].engine
    skipped: list[_Decode] = []
    while queue and len(batch) < limit:
        request = queue.popleft()
        (batch if request.engine == engine else skipped).append(request)
    queue.extendleft(reversed(skipped))


def _answer(future: asyncio.Future, result: Any) -> None:
    """Resolve a caller's future with a result, or with the exception that stands for one."""
    if future.done():  # the caller gave up (disconnected) or close() answered it already
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

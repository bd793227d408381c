"""One executor for every connection: batches decode requests and FSMN VAD chunks across streams.

Loops, threads, futures and supervision around inference.scheduler, which decides the order: live
finals, then streaming steps, then partial re-decodes (a stale partial's future gets None), then
background work (files, the OpenAI endpoint, streams sent faster than real time), one owner's batch
at a time, in turn. Each batch goes to a decode backend (inference.backend): by default one worker
thread of this process (one device), or a shared pool of Ray Serve replicas (inference.ray_backend);
both run inference.batch_decoder (failure isolation, out-of-memory split, CPU fallback, inverse text
normalisation of finals). VAD scoring runs on a thread of its own, so a long decode never delays
endpointing. When the model raises, every request in the failed call gets the exception, so no
client ever waits forever; a request whose requester is gone is cancelled (`cancel`). While a
remote pool is unreachable, partials are shed and finals wait, up to the backend's bound.

Besides the live engine the executor may hold job engines (config jobs.engines), which background
requests ask for by name. They run on the same decode thread; a batch never mixes engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias, TypeVar, cast

from inference.backend import DecodeBackend, LocalBackend, PoolUnavailable
from inference.batch_decoder import BatchDecoder, DecodeWork, StepWork, Work
from inference.engines.base import Audio, DecodeOptions, DecodeResult, Engine, StreamingEngine
from inference.scheduler import JOBS, LIVE, Kind, Lane, Request, Scheduler, Source
from inference.scorer import AsyncVadScorer, Floats, Samples, VadScorer

log = logging.getLogger(__name__)

# VAD batches handed to the scorer at once (see _score_loop).
VAD_BATCHES_IN_FLIGHT = 2

# What a decode request's future resolves to: a stale partial, or a streaming chunk whose segment
# got an offline final first, resolves to None.
Decoded: TypeAlias = DecodeResult | None
T = TypeVar("T")


class ExecutorClosed(RuntimeError):
    """The server is shutting down; the request was not decoded."""


class ExecutorCrashed(RuntimeError):
    """The batching loop failed while this request was in flight; the loop was restarted."""


class UnknownEngine(ValueError):
    """A request named an engine this executor does not hold."""


class RequestCancelled(RuntimeError):
    """Whoever asked for this request is gone (see InferenceExecutor.cancel); it was not decoded."""


@dataclass
class _Decode:
    stream_id: int
    segment_id: int
    audio: Audio
    options: DecodeOptions
    future: asyncio.Future[Decoded]
    engine: str = ""  # name of the engine that decodes it (set on submission)
    submitted: float = field(default_factory=time.monotonic)

    def work(self) -> Work:
        return DecodeWork(self.audio, self.options, self.engine)


@dataclass
class _Step:
    """One chunk for an engine's streaming model; `state` is that stream's cache."""

    stream_id: int
    segment_id: int
    state: Any
    audio: Audio
    is_final: bool
    options: DecodeOptions
    future: asyncio.Future[Decoded]
    submitted: float = field(default_factory=time.monotonic)

    def work(self) -> Work:
        return StepWork(self.state, self.audio, self.is_final, self.options)


@dataclass
class _Score:
    state: Any
    samples: Samples
    future: asyncio.Future[Floats]


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
        scorer: VadScorer,
        max_batch_size: int,
        max_wait_ms: int,
        vad_max_batch_size: int,
        on_batch: Callable[[str, int, float], None] | None = None,
        vad_max_wait_ms: int = 0,
        normalizer: Callable[[str, str | None], str] | None = None,
        job_engines: Sequence[Engine] = (),
        background_batch_size: int | None = None,
        background_hold_ms: int = 0,
        backend: DecodeBackend | None = None,
    ) -> None:
        """`on_batch(kind, size, seconds)` is told about every model call ("decode", "stream" or "vad").
        `normalizer(text, language)` is the inverse text normaliser applied to finals that ask for it.
        `job_engines`: more engines that file requests may name (the live `engine` is always one).
        `background_batch_size`: most background requests per model call (default max_batch_size).
        `background_hold_ms`: most time background work waits for live speech to pause (speech_started).
        `backend`: where batches are decoded (default: a LocalBackend over these engines and `normalizer`;
        a remote backend decodes with its own, and `engine`/`job_engines` then describe those)."""
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
        self._scheduler = Scheduler(max_batch_size, engine.name, background_batch_size, background_hold_ms / 1000)
        self._sources: dict[int, Source] = {}  # streams whose requests are not live (set_source)
        self._batch_done = asyncio.Event()  # replaced after every batch: wakes room() waiters
        self._scores: deque[_Score] = deque()
        self._decode_ready = asyncio.Event()
        self._score_ready = asyncio.Event()
        self._backend: DecodeBackend = backend or LocalBackend(BatchDecoder(self.engines, engine.name, normalizer))
        self._batches: set[asyncio.Task[None]] = set()  # batches in flight, when the backend takes several
        self._steps_in_flight = 0  # batches with streaming chunks in flight: the next chunk waits for them
        self._slot_changed = asyncio.Event()  # a batch finished or live work came: a slot may be usable
        self._vad_pool = ThreadPoolExecutor(1, thread_name_prefix="vad")
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        # Requests handed to a worker thread and not yet answered; close() must answer them too.
        self._decoding: list[_Decode | _Step] = []
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
        self._batch_done.set()
        self._decode_ready.set()
        self._score_ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for batch in list(self._batches):
            batch.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
        queued = [r.item for r in self._scheduler.drain()]
        for request in [*queued, *self._scores, *self._decoding, *self._scoring]:
            if not request.future.done():
                request.future.set_exception(ExecutorClosed("server shutting down"))
        self._scores.clear()
        await self._backend.close()
        self._vad_pool.shutdown(wait=False, cancel_futures=True)

    # --- submission ------------------------------------------------------------------------
    def new_stream_id(self) -> int:
        return next(self._stream_ids)

    @property
    def queue_depth(self) -> int:
        """Live requests waiting (finals, streaming chunks, partials)."""
        return self._scheduler.live_depth

    @property
    def streaming(self) -> bool:
        """The engine has a streaming model: partials come from submit_step, not re-decodes."""
        return self.engine.streaming

    def engine_name(self, name: str | None = None) -> str:
        """The engine a request naming `name` gets (None = the live engine); UnknownEngine if none."""
        if name is None or name == self.engine.name:
            return self.engine.name
        if name not in self.engines:
            raise UnknownEngine(f"engine {name!r} is not loaded; loaded: {', '.join(self.engines)}")
        return name

    def new_stream_state(self, *args: Any) -> Any:
        """A fresh cache for the engine's streaming model (one per stream and segment)."""
        return self._streaming_engine.new_stream_state(*args)

    @property
    def _streaming_engine(self) -> StreamingEngine:
        """The live engine, for the streaming calls that are only made when `streaming` is True."""
        return cast(StreamingEngine, self.engine)

    @property
    def oldest_final_wait_s(self) -> float:
        """How long the oldest queued final has waited: the executor's backlog, in time."""
        oldest = self._scheduler.oldest_final_submitted()
        return time.monotonic() - oldest if oldest is not None else 0.0

    def submit_final(
        self,
        stream_id: int,
        segment_id: int,
        audio: Audio,
        options: DecodeOptions,
        engine: str | None = None,
        *,
        source: Source | None = None,
    ) -> asyncio.Future[Decoded]:
        """Future resolving to the DecodeResult of a closed segment (never dropped, only cancelled).
        `source` says who asks (LIVE: a stream paced in real time; else background work with its
        owner's fair share); None: the stream's (set_source), LIVE by default. `engine` names a job
        engine: such requests are always background work."""
        name = self.engine_name(engine)
        source = source or self._sources.get(stream_id, LIVE)
        if name != self.engine.name and source.live:
            source = Source(source.owner, live=False)
        record = _Decode(stream_id, segment_id, audio, options, self._new_future(), name)
        return self._submit(Request(Kind.FINAL, stream_id, segment_id, name, source, record.submitted), record)

    def submit_partial(
        self,
        stream_id: int,
        segment_id: int,
        audio: Audio,
        options: DecodeOptions,
        *,
        source: Source | None = None,
    ) -> asyncio.Future[Decoded]:
        """Future resolving to a DecodeResult, or to None if a newer request made it stale."""
        source = source or self._sources.get(stream_id, LIVE)
        record = _Decode(stream_id, segment_id, audio, options, self._new_future(), self.engine.name)
        return self._submit(
            Request(Kind.PARTIAL, stream_id, segment_id, self.engine.name, source, record.submitted), record
        )

    def submit_background(
        self, audio: Audio, options: DecodeOptions, engine: str | None = None, *, source: Source = JOBS
    ) -> asyncio.Future[Decoded]:
        """A segment of a file being transcribed by `engine` (None = the live engine): decoded in
        batches of its own, only while no live work waits, in turn with other owners' work."""
        name = self.engine_name(engine)
        record = _Decode(-1, -1, audio, options, self._new_future(), name)
        return self._submit(Request(Kind.FINAL, -1, -1, name, source, record.submitted), record)

    @property
    def live_speakers(self) -> int:
        """Live streams speaking now: background work waits for their finals (speech_started)."""
        return self._scheduler.speakers

    @property
    def background_depth(self) -> int:
        return self._scheduler.background_depth

    def submit_step(
        self,
        stream_id: int,
        segment_id: int,
        state: Any,
        audio: Audio,
        is_final: bool,
        options: DecodeOptions,
        *,
        source: Source | None = None,
    ) -> asyncio.Future[Decoded]:
        """Future resolving to the streaming model's DecodeResult after this chunk: the segment's
        text so far (with is_final, its finished text). Chunks of one stream run in submission order
        (a stream that turns from live to background keeps that order: live work runs first).
        A chunk whose segment gets an offline final first resolves to None (that final replaces it)."""
        source = source or self._sources.get(stream_id, LIVE)
        step = _Step(stream_id, segment_id, state, audio, is_final, options, self._new_future())
        request = Request(Kind.STEP, stream_id, segment_id, self.engine.name, source, step.submitted, is_final)
        return self._submit(request, step)

    def cancel(self, stream_id: int) -> int:
        """The stream's queued background requests get RequestCancelled: whoever asked is gone.
        Live work is kept (a vanished live client's finals still reach the history). Returns how many."""
        cancelled = self._scheduler.cancel(stream_id)
        for request in cancelled:
            _answer(request.item.future, RequestCancelled("the requester is gone"))
        self._wake_room_waiters()
        return len(cancelled)

    def set_source(self, stream_id: int, source: Source) -> None:
        """Who the stream's later requests come from, when they do not say (a stream found sending
        faster than real time becomes background work); forgotten with forget_stream."""
        self._sources[stream_id] = source
        if not source.live:  # what it queued while it still looked live goes behind the live streams too
            self._scheduler.demote(stream_id, source)
            self._decode_ready.set()  # (background work it held may go now)

    def speech_started(self, stream_id: int, segment_id: int) -> None:
        """A live stream began speaking a segment: background decodes wait for its final (at most
        background_hold_ms), since one started meanwhile would delay that final. Not live: ignored."""
        if self._sources.get(stream_id, LIVE).live:
            self._scheduler.speech_started(stream_id, segment_id)

    async def room(self, stream_id: int, limit: int) -> None:
        """Wait until at most `limit` of the stream's background requests are queued: a producer
        that cuts segments faster than they are decoded waits here instead of queueing them all."""
        while self._scheduler.background_queued(stream_id) > limit and not self._closed:
            await self._batch_done.wait()

    def score_speech(self, state: Any, samples: Samples) -> asyncio.Future[Floats]:
        """Future resolving to FSMN speech probabilities for this stream's new samples."""
        future: asyncio.Future[Floats] = self._new_future()
        self._scores.append(_Score(state, samples, future))
        self._score_ready.set()
        return future

    def forget_stream(self, stream_id: int) -> None:
        """The stream no longer wants partials (it ended); its finals stay queued."""
        self._sources.pop(stream_id, None)
        self._answer_dropped(self._scheduler.forget_stream(stream_id))
        self._decode_ready.set()  # (background work it held may go now)

    async def clear_device_cache(self) -> dict[str, Any]:
        """Clear every loaded engine's device cache on the decode thread, between model calls (never
        under one): {"engines": [one report per engine, saying what was freed]}."""
        from inference.devices import clear_engine_cache

        def clear_all(decoder: BatchDecoder) -> dict[str, Any]:
            return {"engines": [clear_engine_cache(e.name, e.device) for e in decoder.engines.values()]}

        return await self._backend.run_on_engines(clear_all)

    async def device_report(self) -> dict[str, Any]:
        """For the admin page: the devices here, and each loaded engine with its device and memory."""
        from inference.devices import RUNTIME, engine_memory, inventory

        def report(decoder: BatchDecoder) -> dict[str, Any]:
            engines = [
                {
                    "name": e.name,
                    "model": e.model,
                    "device": e.device,
                    "runtime": RUNTIME.get(e.name, "none"),
                    "live": e.name == decoder.live,
                    "memory": engine_memory(e.name, e.device),
                }
                for e in decoder.engines.values()
            ]
            return {"devices": inventory(), "engines": engines}

        return {**await self._backend.run_on_engines(report, between_calls=False), "backend": self._backend.figures()}

    @property
    def backend(self) -> DecodeBackend:
        return self._backend

    @property
    def backend_healthy(self) -> bool:
        """False while the decode backend cannot decode (a remote pool is unreachable)."""
        return self._backend.healthy

    def backend_figures(self) -> dict[str, Any]:
        """The decode backend, for /healthz: which one, and a remote pool's state."""
        return self._backend.figures()

    def _new_future(self) -> asyncio.Future[T]:
        future = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ExecutorClosed("server shutting down"))
        return future

    def _submit(self, request: Request, record: _Decode | _Step) -> asyncio.Future[Decoded]:
        request.item = record
        if not record.future.done() and not self._backend.healthy:  # (closed: already answered)
            self._refuse_while_unhealthy(request)
        if not record.future.done():
            self._answer_dropped(self._scheduler.add(request))
            self._decode_ready.set()
            if request.lane is Lane.FINAL:
                self._slot_changed.set()  # a live final may go past the batches in flight
        return record.future

    def _refuse_while_unhealthy(self, request: Request) -> None:
        """The pool is unreachable: a partial is shed at once (None, like a stale one); a final
        waits unless the backend's bound of waiting finals is reached, then it is refused."""
        if request.kind is Kind.PARTIAL:
            self.stats.partials_dropped += 1
            _answer(request.item.future, None)
            return
        bound = self._backend.max_queued_finals
        waiting = sum(r.kind is not Kind.PARTIAL for r in self._scheduler.pending()) + len(self._decoding)
        if bound and waiting >= bound:
            _answer(
                request.item.future,
                PoolUnavailable(
                    f"the inference pool is unreachable and {waiting} requests already wait for it "
                    "(inference.ray_max_queued_finals); not decoded, try again later"
                ),
            )

    def _wake_room_waiters(self) -> None:
        done, self._batch_done = self._batch_done, asyncio.Event()
        done.set()

    def _answer_dropped(self, dropped: list[Request]) -> None:
        """Requests made stale by newer ones resolve to None."""
        for request in dropped:
            if request.kind is Kind.PARTIAL:
                self.stats.partials_dropped += 1
            _answer(request.item.future, None)

    # --- decode loop -----------------------------------------------------------------------
    async def _supervise(self, run_loop: Callable[[], Awaitable[None]], in_flight: str) -> None:
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
        while not self._closed:
            await self._wait_for_work()
            if self._closed:
                break
            await self._gather_more()
            await self._wait_for_slot()
            now = time.monotonic()
            taken = self._scheduler.take_batch(now)
            # _gather_more may have cleared the flag; whatever take_batch left (a stream's next
            # streaming chunk, more requests than one batch) must run without waiting for new work.
            if self._scheduler.ready(now):
                self._decode_ready.set()
            else:
                self._decode_ready.clear()
            lane = min((r.lane for r in taken), default=Lane.BACKGROUND)
            if not self._backend.healthy:  # the pool is unreachable: partials are shed first
                self._answer_dropped([r for r in taken if r.kind is Kind.PARTIAL])
            batch = [r.item for r in taken if not r.item.future.done()]  # e.g. cancelled by a vanished caller
            if not batch:
                continue
            if self._backend.max_in_flight <= 1:
                await self._run_batch(batch, lane)
                continue
            task = asyncio.create_task(self._run_batch_guarded(batch, lane), name="decode-batch")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _wait_for_slot(self) -> None:
        """With a backend that takes several batches at once (a pool of replicas): wait while its
        slots are full (a live final may go past them, up to twice as many batches: in the pool it
        waits only for the batch being decoded), and while streaming chunks are in flight (a
        stream's next chunk needs the cache they return)."""
        limit = self._backend.max_in_flight
        while limit > 1 and not self._closed:
            in_flight = len(self._batches)
            final_waits = self._scheduler.oldest_final_submitted() is not None
            if not self._steps_in_flight and (in_flight < limit or (final_waits and in_flight < 2 * limit)):
                return
            self._slot_changed.clear()
            await self._slot_changed.wait()

    async def _run_batch_guarded(self, batch: list[_Decode | _Step], lane: Lane) -> None:
        """A batch run beside others: a bug while answering it fails its own requests, not the loop."""
        try:
            await self._run_batch(batch, lane)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.restarts += 1
            log.exception("answering a batch of %d failed", len(batch))
            for request in batch:
                _answer(request.future, ExecutorCrashed(f"inference loop failed ({type(exc).__name__}); retry"))
            self._decoding = [r for r in self._decoding if r not in batch]

    async def _run_batch(self, batch: list[_Decode | _Step], lane: Lane) -> None:
        started = time.monotonic()
        self._decoding.extend(batch)
        steps = sum(isinstance(r, _Step) for r in batch)
        self._steps_in_flight += steps > 0
        errors = 0
        try:
            outcome = await self._backend.decode([r.work() for r in batch], lane)
            results: Sequence[Any] = outcome.results
            errors = outcome.errors
            self.stats.cpu_fallbacks += outcome.cpu_fallbacks
        except Exception as exc:  # no answer can come (e.g. the pool gone for good): tell every waiter
            errors = 1
            log.exception("decode of %d request(s) failed", len(batch))
            results = [exc] * len(batch)
        finally:
            self._steps_in_flight -= steps > 0
            self._slot_changed.set()
        elapsed = time.monotonic() - started
        self.stats.errors += errors
        self.stats.batches += 1
        self.stats.decoded += len(batch)
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
        done = {id(r) for r in batch}
        self._decoding = [r for r in self._decoding if id(r) not in done]
        self._wake_room_waiters()

    async def _wait_for_work(self) -> None:
        """Until a request is added, or background work held by live speech gets its turn anyway."""
        ends_at = self._scheduler.hold_ends_at()
        if ends_at is None:
            await self._decode_ready.wait()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._decode_ready.wait(), max(0.0, ends_at - time.monotonic()))

    async def _gather_more(self) -> None:
        # Wait (up to max_wait after the oldest request) for a fuller batch; a full batch goes at once.
        oldest = self._scheduler.oldest_submitted()
        if oldest is None:
            return
        deadline = oldest + self.max_wait_s
        while self._scheduler.ready_size() < self._scheduler.batch_limit and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._decode_ready.clear()
            try:
                await asyncio.wait_for(self._decode_ready.wait(), remaining)
            except TimeoutError:
                return
        self._decode_ready.set()

    # --- VAD loop --------------------------------------------------------------------------
    async def _score_loop(self) -> None:
        # Up to VAD_BATCHES_IN_FLIGHT batches at once: the next is in the scorer's pipe while one
        # is scored, so the scorer never idles while the event loop is busy elsewhere. A stream
        # has one score in flight at most, so its batches never overtake each other.
        slots = asyncio.Semaphore(VAD_BATCHES_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            slots.release()

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
                task.add_done_callback(finished)
        finally:
            for task in running:
                task.cancel()

    async def _score_batch(self, batch: list[_Score]) -> None:
        self._scoring.extend(batch)
        started = time.monotonic()
        work = [(w.state, w.samples) for w in batch]
        results: Sequence[Floats | BaseException]
        try:
            if isinstance(self.scorer, AsyncVadScorer):  # a worker process: the loop waits on its pipe
                results = await self.scorer.score_async(work)
            else:
                results = await asyncio.get_running_loop().run_in_executor(self._vad_pool, self.scorer.score, work)
        except Exception as exc:  # (cancelled: close() answers what is left in _scoring)
            log.exception("VAD scoring failed")
            results = [exc] * len(batch)
        scored = {id(w) for w in batch}
        self._scoring = [w for w in self._scoring if id(w) not in scored]
        self._on_batch("vad", len(batch), time.monotonic() - started)
        for request, result in zip(batch, results):
            _answer(request.future, result)


def _answer(future: asyncio.Future[T], result: T | BaseException) -> None:
    """Resolve a caller's future with a result, or with the exception that stands for one."""
    if future.done():  # the caller gave up (disconnected) or close() answered it already
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

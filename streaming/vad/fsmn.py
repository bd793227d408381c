"""The interface between a stream and an FSMN speech scorer; the state is owned by the stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streaming.events import Samples


class SpeechScorer(Protocol):
    """Scores 16 kHz audio into one speech probability per 10 ms frame.

    The scorer is stateless across streams: everything a stream carries between chunks (feature
    remainder, model caches) lives in the opaque object from `new_state()`, held by the stream.
    That is what lets one scorer batch chunks from many streams in a single model call.
    """

    def new_state(self) -> Any: ...

    def score(self, work: Sequence[tuple[Any, Samples]]) -> list[npt.NDArray[np.float32]]:
        """For each (state, new_samples): probabilities of the frames that became complete."""
        ...

"""The typed seam between the executor/server and the VAD scorers (inference.scorer)."""

import numpy as np

from inference.scorer import AsyncVadScorer
from inference.vad_fsmn import FsmnScorer
from inference.vad_process import ProcessScorer


def test_only_the_worker_process_scorer_is_waited_on_by_the_event_loop():
    # The executor takes the event-loop path exactly for scorers with score_async (ProcessScorer);
    # the in-process scorer is called on the VAD thread.
    assert issubclass(ProcessScorer, AsyncVadScorer)
    assert not issubclass(FsmnScorer, AsyncVadScorer)


def test_stand_in_scorers_are_told_apart_by_score_async_alone():
    # Tests hand the executor stand-ins with only the methods they need: one with new_state and
    # score_async (no score, no close) still takes the event-loop path.
    class Blocking:
        def new_state(self):
            return None

        def score(self, work):
            return []

    class Waiting:
        def new_state(self):
            return None

        async def score_async(self, work):
            return []

    assert not isinstance(Blocking(), AsyncVadScorer)
    assert isinstance(Waiting(), AsyncVadScorer)


def test_every_scorer_can_be_closed_and_the_in_process_one_closes_as_a_no_op(scorer):
    # The server closes a scorer it loaded itself without asking what kind it is.
    assert callable(ProcessScorer.close)
    scorer.close()  # the shared session fixture: it must still score after
    (probabilities,) = scorer.score([(scorer.new_state(), np.zeros(1600, dtype=np.int16))])
    assert probabilities.dtype == np.float32 and len(probabilities) > 0

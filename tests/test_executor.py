"""The batching executor's policy: batches, lanes, stale partials dropped, OOM split then CPU
fallback, close, crash restart.

Words are not what these tests check: each request must get ITS OWN result, in the right batches.
So they decode with `KnownClipsEngine` (tests/engines.py), a deterministic, instant stand-in that
recognises only this module's clips (each clip -> its phrase; any other audio -> "<unknown N
samples>"): the `[words(r.text) ...] == PHRASES` checks prove that every result went back to its own
request. One test keeps the real embedded Whisper engine (finals from many streams in one model
call), so the real model still runs through the executor.

Fault injection wraps the engine (`RecordingEngine`); `SimulatedCudaEngine` stands in for a GPU,
which these machines do not have (it raises CUDA's out-of-memory message for batches above a size).
"""

from __future__ import annotations

import asyncio
import logging
import re

import numpy as np
import pytest

from inference.engines.base import DecodeOptions
from inference.executor import ExecutorClosed, InferenceExecutor
from tests.engines import KnownClipsEngine, RecordingEngine, SimulatedCudaEngine
from tests.speech import compose

PHRASES = ["hello world", "good morning", "thank you very much", "open the door"]


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", "", text.lower()).split())


@pytest.fixture(scope="module")
def clips():
    return [compose([0.2, p, 0.2]).audio for p in PHRASES]


@pytest.fixture
def known_engine(clips):
    """The stand-in engine that recognises exactly this module's clips as their PHRASES."""
    return KnownClipsEngine.of(clips, PHRASES)


def test_the_stand_in_engine_recognises_only_its_clips(known_engine, clips):
    # What makes the policy tests' word checks mean something: each clip gets its own phrase, in
    # any batch order, and anything else (a cut clip, silence) gets a text that is no phrase.
    order = [3, 1, 0, 2]
    results = known_engine.decode([clips[i] for i in order], [DecodeOptions()] * 4)
    assert [r.text for r in results] == [PHRASES[i] for i in order]
    strangers = [clips[1][:8000], np.zeros(12345, np.float32), clips[0].astype(np.float64)[1:]]
    texts = [r.text for r in known_engine.decode(strangers, [DecodeOptions()] * 3)]
    assert texts == ["<unknown 8000 samples>", "<unknown 12345 samples>", f"<unknown {len(clips[0]) - 1} samples>"]
    assert known_engine.decode([clips[2].copy()], [DecodeOptions()])[0].text == PHRASES[2]


async def make(engine, scorer, max_batch=8, max_wait_ms=50):
    executor = InferenceExecutor(engine, scorer, max_batch, max_wait_ms, 64)
    await executor.start()
    return executor


async def test_finals_from_many_streams_share_one_model_call(whisper_engine, scorer, clips):
    # The one test on the real model: its words come from Whisper, through the executor's batch.
    engine = RecordingEngine(whisper_engine)
    executor = await make(engine, scorer, max_batch=4)
    futures = [executor.submit_final(i, 0, clip, DecodeOptions()) for i, clip in enumerate(clips)]
    results = await asyncio.gather(*futures)
    await executor.close()
    assert engine.calls == [[len(c) for c in clips]]
    assert [words(r.text) for r in results] == PHRASES


async def test_batch_size_one_decodes_one_at_a_time(known_engine, scorer, clips):
    engine = RecordingEngine(known_engine)
    executor = await make(engine, scorer, max_batch=1)
    results = await asyncio.gather(*[executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips[:2])])
    await executor.close()
    assert len(engine.calls) == 2 and [words(r.text) for r in results] == PHRASES[:2]


async def test_finals_jump_ahead_of_partials_and_stale_partials_are_dropped(known_engine, scorer, clips):
    engine = RecordingEngine(known_engine)
    executor = await make(engine, scorer, max_batch=1, max_wait_ms=0)
    engine.gate.clear()  # hold the model so requests queue up behind the first
    first = executor.submit_final(9, 0, clips[0], DecodeOptions())
    await asyncio.sleep(0.05)
    old_partial = executor.submit_partial(1, 0, clips[1][:8000], DecodeOptions(partial=True))
    new_partial = executor.submit_partial(1, 0, clips[1], DecodeOptions(partial=True))
    other_partial = executor.submit_partial(2, 3, clips[2], DecodeOptions(partial=True))
    final = executor.submit_final(3, 0, clips[3], DecodeOptions())
    assert await old_partial is None  # superseded by a newer partial of the same stream
    superseded = executor.submit_final(2, 3, clips[2], DecodeOptions())
    assert await other_partial is None  # the segment's final makes its pending partial stale
    engine.gate.set()
    await asyncio.gather(first, final, new_partial, superseded)
    await executor.close()
    order = [call[0] for call in engine.calls]
    assert order == [len(clips[0]), len(clips[3]), len(clips[2]), len(clips[1])]
    assert words((await final).text) == PHRASES[3]
    assert executor.stats.partials_dropped == 2


async def test_model_error_reaches_every_waiter_and_the_executor_recovers(known_engine, scorer, clips):
    broken = {"on": True}
    engine = RecordingEngine(known_engine, fail=lambda audios: broken["on"])
    executor = await make(engine, scorer, max_batch=4)
    futures = [executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips[:3])]
    futures.append(executor.submit_partial(7, 0, clips[3], DecodeOptions(partial=True)))
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and "injected" in str(o) for o in outcomes)
    broken["on"] = False
    result = await executor.submit_final(0, 1, clips[0], DecodeOptions())
    await executor.close()
    assert words(result.text) == PHRASES[0]


async def test_one_poisoned_request_does_not_fail_its_batch_mates(known_engine, scorer, clips):
    poison = np.zeros(12345, dtype=np.float32)
    engine = RecordingEngine(known_engine, fail=lambda audios: any(len(a) == len(poison) for a in audios))
    executor = await make(engine, scorer, max_batch=4)
    futures = [
        executor.submit_final(0, 0, clips[0], DecodeOptions()),
        executor.submit_final(1, 0, poison, DecodeOptions()),
    ]
    good, bad = await asyncio.gather(*futures, return_exceptions=True)
    await executor.close()
    assert words(good.text) == PHRASES[0]
    assert isinstance(bad, RuntimeError)


async def test_cuda_out_of_memory_splits_the_batch_then_falls_back_to_cpu(known_engine, scorer, clips, caplog):
    caplog.set_level(logging.WARNING, logger="inference.executor")
    split_engine = SimulatedCudaEngine(known_engine, max_ok=2)
    executor = await make(split_engine, scorer, max_batch=4)
    results = await asyncio.gather(*[executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips)])
    await executor.close()
    assert [len(c) for c in split_engine.calls] == [4, 2, 2]
    assert [words(r.text) for r in results] == PHRASES
    assert "splitting" in caplog.text

    cpu_engine = SimulatedCudaEngine(known_engine, max_ok=0)
    executor = await make(cpu_engine, scorer, max_batch=2)
    results = await asyncio.gather(*[executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips[:2])])
    await executor.close()
    assert [words(r.text) for r in results] == PHRASES[:2]
    assert executor.stats.cpu_fallbacks == 2
    assert "decoding it on the CPU" in caplog.text


async def test_close_fails_queued_requests_instead_of_leaving_them_hanging(known_engine, scorer, clips):
    engine = RecordingEngine(known_engine)
    executor = await make(engine, scorer, max_batch=1, max_wait_ms=0)
    engine.gate.clear()
    running = executor.submit_final(0, 0, clips[0], DecodeOptions())
    await asyncio.sleep(0.05)
    queued = executor.submit_final(1, 0, clips[1], DecodeOptions())
    await executor.close()
    engine.gate.set()
    with pytest.raises(ExecutorClosed):
        await queued
    with pytest.raises((ExecutorClosed, asyncio.CancelledError)):
        await asyncio.wait_for(running, 5)
    with pytest.raises(ExecutorClosed):
        await executor.submit_final(2, 0, clips[2], DecodeOptions())


async def test_vad_chunks_from_many_streams_are_scored_in_one_call(known_engine, scorer, clips):
    calls = []

    class CountingScorer:
        def new_state(self):
            return scorer.new_state()

        def score(self, work):
            calls.append(len(work))
            return scorer.score(work)

    executor = await make(known_engine, CountingScorer())
    states = [scorer.new_state() for _ in range(6)]
    results = await asyncio.gather(*[executor.score_speech(s, clips[0][:1600]) for s in states])
    await executor.close()
    assert sum(calls) == 6 and len(calls) < 6
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-5)


@pytest.mark.parametrize(
    "spoken, options, extra, expected",
    [
        ("二零二五年三月十五号下午三点十五分", DecodeOptions(), {}, "2025年3月15日下午3:15"),
        ("一千二百三十四元", DecodeOptions(itn=False), {}, "一千二百三十四元"),  # the client turned ITN off
        ("一千二百三十四元", DecodeOptions(partial=True), {}, "一千二百三十四元"),  # partials stay as heard
        ("一千二百三十四元", DecodeOptions(), {"itn_done": True}, "一千二百三十四元"),  # engine did its own
        ("it costs twenty five dollars", DecodeOptions(language="en"), {}, "it costs $25"),
    ],
)
async def test_finals_get_inverse_text_normalisation_as_each_stream_asks(scorer, spoken, options, extra, expected):
    from tests.engines import SpokenFormEngine
    from text.itn import InverseNormalizer

    executor = InferenceExecutor(SpokenFormEngine(spoken, extra), scorer, 4, 0, 64, normalizer=InverseNormalizer())
    await executor.start()
    try:
        submit = executor.submit_partial if options.partial else executor.submit_final
        result = await submit(0, 0, np.zeros(16000, np.float32), options)
    finally:
        await executor.close()
    assert result.text == expected


async def test_a_crashed_batching_loop_fails_its_in_flight_requests_and_restarts(known_engine, scorer, clips):
    # Injected executor death: the per-batch callback raises once, after a batch was decoded but
    # before it was answered - a bug in the loop itself, not a model error.
    from inference.executor import ExecutorCrashed

    crashes = []

    def on_batch(kind, size, seconds):
        if not crashes:
            crashes.append(kind)
            raise RuntimeError("injected executor bug")

    executor = InferenceExecutor(known_engine, scorer, 4, 0, 64, on_batch=on_batch)
    await executor.start()
    try:
        in_flight = executor.submit_final(0, 0, clips[0], DecodeOptions())
        with pytest.raises(ExecutorCrashed, match="retry"):
            await asyncio.wait_for(in_flight, 60)
        later = await asyncio.wait_for(executor.submit_final(1, 0, clips[1], DecodeOptions()), 60)
    finally:
        await executor.close()
    assert words(later.text) == "good morning" and executor.stats.restarts == 1


async def test_next_vad_batch_is_sent_while_one_is_being_scored(known_engine, scorer, clips):
    # The scorer must never idle while the event loop is busy: a second batch goes into its pipe
    # while the first is scored, and no more than that (a stream's chunks stay in order anyway).
    from inference.executor import VAD_BATCHES_IN_FLIGHT

    class SlowScorer:  # the real scorer, behind a gate that holds every call until opened
        def __init__(self):
            self.gate, self.active, self.peak = asyncio.Event(), 0, 0

        def new_state(self):
            return scorer.new_state()

        async def score_async(self, work):
            self.active += 1
            self.peak = max(self.peak, self.active)
            try:
                await self.gate.wait()
                return scorer.score(work)
            finally:
                self.active -= 1

    slow = SlowScorer()
    executor = await make(known_engine, slow)
    futures = []
    for _ in range(4):  # one stream per submission, each after the previous batch has left
        futures.append(executor.score_speech(scorer.new_state(), clips[0][:1600]))
        await asyncio.sleep(0.01)
    assert slow.peak == VAD_BATCHES_IN_FLIGHT == 2
    slow.gate.set()
    results = await asyncio.gather(*futures)
    await executor.close()
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-5)


async def test_a_stream_set_to_background_waits_behind_live_work_can_be_bounded_and_cancelled(scorer):
    from inference.executor import RequestCancelled
    from inference.scheduler import Source
    from tests.engines import GatedEngine

    engine = GatedEngine()
    executor = InferenceExecutor(engine, scorer, 1, 0, 64)
    await executor.start()
    clip = lambda n: np.zeros(16000 + n, np.float32)  # noqa: E731 - told apart by length
    try:
        executor.set_source(7, Source("10.0.0.7", live=False))  # a stream sent faster than real time
        fast = [executor.submit_final(7, i, clip(i), DecodeOptions()) for i in range(4)]
        await asyncio.sleep(0.05)  # the first is in the (held) model call
        live = executor.submit_final(1, 0, clip(100), DecodeOptions())
        room = asyncio.create_task(executor.room(7, 1))
        await asyncio.sleep(0.05)
        assert not room.done()  # three queued: the producer waits
        assert executor.cancel(7) == 3  # its client went away: the queued three go, live work stays
        await asyncio.wait_for(room, 10)
        engine.gate.set()
        assert (await fast[0]).text and (await live).text
        for future in fast[1:]:
            with pytest.raises(RequestCancelled):
                await future
        assert engine.calls == [[16000], [16100]]  # the live final, then nothing of the cancelled
        executor.forget_stream(7)
        later = executor.submit_final(7, 9, clip(200), DecodeOptions())  # the stream's source is forgotten
        assert executor.queue_depth == 1
        await later
    finally:
        await executor.close()

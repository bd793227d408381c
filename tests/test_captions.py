"""The caption pipeline with plain calls: segmenter events and decode results in, requests and captions out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from streaming.captions import (
    ArrivalLog,
    CaptionPipeline,
    DecodeRequest,
    FinalDeferred,
    Lane,
    PartialShed,
    SegmentOpened,
)
from streaming.events import PartialDue, SegmentClosed, SpeechStarted

SR = 16000


@dataclass(frozen=True)
class Result:
    text: str
    timestamps: tuple[tuple[int, int], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    words_end_ms: int | None = None
    words: tuple[tuple[str, int, int], ...] | None = None


def audio(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def started(segment_id: int, start_s: float) -> SpeechStarted:
    return SpeechStarted(segment_id, int(start_s * SR), int(start_s * SR))


def due(segment_id: int, start_s: float, end_s: float) -> PartialDue:
    start, end = int(start_s * SR), int(end_s * SR)
    return PartialDue(segment_id, start, end, start, audio(end_s - start_s))


def closed(segment_id: int, start_s: float, end_s: float, reason: str = "silence", **kw) -> SegmentClosed:
    start, end = int(start_s * SR), int(end_s * SR)
    return SegmentClosed(segment_id, start, end, start, end, reason, audio(end_s - start_s), **kw)


def requests(actions) -> list[DecodeRequest]:
    return [a for a in actions if isinstance(a, DecodeRequest)]


def test_a_partial_is_a_re_decode_and_a_closed_segment_a_final():
    pipeline = CaptionPipeline("2pass")
    assert pipeline.on_event(started(0, 1.0), now=0.0) == [SegmentOpened(0, streamed=False)]
    (partial,) = pipeline.on_event(due(0, 1.0, 1.5), now=0.5)
    assert partial.lane is Lane.PARTIAL and not partial.is_final and len(partial.audio) == SR // 2
    (final,) = pipeline.on_event(closed(0, 1.0, 2.0), now=1.0)
    assert final.lane is Lane.FINAL and final.is_final and len(final.audio) == SR


def test_partials_are_shed_under_overload_and_finals_are_not():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    assert pipeline.on_event(due(0, 0.0, 0.5), now=0.5, overloaded=True) == [PartialShed(0)]
    (final,) = pipeline.on_event(closed(0, 0.0, 1.0), now=1.0, overloaded=True)
    assert final.lane is Lane.FINAL


def test_overload_stops_streaming_a_2pass_segment_for_good():
    pipeline = CaptionPipeline("2pass", chunk_samples=SR // 10)
    assert pipeline.on_event(started(0, 0.0), now=0.0) == [SegmentOpened(0, streamed=True)]
    steps = pipeline.on_event(due(0, 0.0, 0.35), now=0.35)
    assert [s.lane for s in steps] == [Lane.STEP] * 3 and not any(s.flush for s in steps)
    assert pipeline.on_event(due(0, 0.0, 0.6), now=0.6, overloaded=True) == [PartialShed(0)]
    assert pipeline.streamed_segment is None
    assert pipeline.on_event(due(0, 0.0, 0.9), now=0.9) == []  # given up: no more steps, even unloaded
    (final,) = pipeline.on_event(closed(0, 0.0, 1.0), now=1.0)
    assert final.lane is Lane.FINAL  # the offline pass captions it


def test_online_mode_streams_the_rest_and_its_flush_is_the_final():
    pipeline = CaptionPipeline("online", chunk_samples=SR // 10)
    pipeline.on_event(started(0, 0.0), now=0.0)
    pipeline.on_event(due(0, 0.0, 0.2), now=0.2)
    *steps, flush = pipeline.on_event(closed(0, 0.0, 0.45), now=0.45)
    assert [len(s.audio) for s in steps] == [SR // 10] * 2 and not any(s.is_final for s in steps)
    assert flush.lane is Lane.STEP and flush.flush and flush.is_final and len(flush.audio) == SR // 20
    # A settled partial of an online segment still shows after the segment closed.
    assert pipeline.partial_decoded(steps[0], "hello") is not None


def test_a_partial_decoded_after_its_segment_closed_is_stale():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    (request,) = pipeline.on_event(due(0, 0.0, 0.5), now=0.5)
    pipeline.on_event(closed(0, 0.0, 1.0), now=1.0)
    assert pipeline.partial_decoded(request, "hello world") is None


def test_partials_split_stable_from_unstable_in_session_time():
    pipeline = CaptionPipeline("2pass", segment_base=5, time_base_ms=60_000)
    pipeline.on_event(started(0, 1.0), now=0.0)
    (first,) = pipeline.on_event(due(0, 1.0, 1.5), now=0.5)
    (second,) = pipeline.on_event(due(0, 1.0, 2.0), now=1.0)
    one = pipeline.partial_decoded(first, "hello there")
    two = pipeline.partial_decoded(second, "hello there world")
    assert one is not None and (one.stable, one.unstable, one.delta) == ("", "hello there", "")
    assert two is not None and (two.stable, two.unstable, two.delta) == ("hello there", "world", "hello there")
    assert (two.segment_id, two.start_ms, two.end_ms) == (5, 61_000, 62_000)
    assert pipeline.partial_decoded(second, "hello there world") is not None  # same text: still shown


def test_a_final_carries_its_times_fields_and_what_to_append():
    pipeline = CaptionPipeline("online", segment_base=2, time_base_ms=10_000)
    pipeline.on_event(started(0, 1.0), now=0.0)
    (partial,) = pipeline.on_event(due(0, 1.0, 1.5), now=0.5)
    pipeline.partial_decoded(partial, "hello there")
    pipeline.partial_decoded(partial, "hello there")  # agreed twice: committed
    pipeline.on_event(closed(0, 1.0, 2.0), now=10.0, endpoint_s=0.75)
    extra = {"queue_ms": 12, "decode_ms": 30, "repeats_removed": 1, "language": "en"}
    final = pipeline.final_decoded(Result("hello there friend", ((0, 100),), extra), now=10.25)
    assert (final.segment_id, final.start_ms, final.end_ms, final.end_reason) == (2, 11_000, 12_000, "silence")
    assert final.text == "hello there friend" and final.append_text == "friend"
    assert final.timestamps == ((11_000, 11_100),)  # session time
    assert final.timing() == {"queue_ms": 12, "decode_ms": 30, "repeats_removed": 1, "final_ms": 250,
                              "endpoint_ms": 750}  # fmt: skip
    assert pipeline.next_segment_id == 3
    with pytest.raises(AttributeError):
        final.text = "changed"  # built once


def test_a_failed_decode_is_a_final_with_an_error():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    pipeline.on_event(closed(0, 0.0, 1.0), now=1.0)
    final = pipeline.final_decoded(None, now=1.5, failure="model exploded")
    assert final.text == "" and final.timing() == {"final_ms": 500, "error": "decoding failed: model exploded"}


def test_the_segment_after_a_length_cut_is_decoded_once_the_final_before_it_is_known():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    (cut,) = pipeline.on_event(closed(0, 0.0, 6.0, "max_length"), now=6.0)
    pipeline.on_event(started(1, 6.0), now=6.0)
    # The segment after the cut: its place in the order, but nothing to decode yet.
    assert pipeline.on_event(closed(1, 6.0, 8.0, follows_cut=True), now=8.0) == [FinalDeferred(1)]
    assert pipeline.finals_pending == 2
    # The words of the final before the cut ended 0.25 s after the cut (decoded with audio after it).
    first = pipeline.final_decoded(Result("one two", words_end_ms=6250), now=8.5)
    assert first.segment_id == 0
    after = pipeline.final_request()
    assert after.lane is Lane.FINAL and after.segment_id == 1
    assert after.context_samples == SR // 4  # its words begin where those before the cut ended
    second = pipeline.final_decoded(Result("three"), now=9.0)
    assert (second.segment_id, second.final_ms) == (1, 1000)
    assert pipeline.finals_pending == 0


def test_the_segment_after_a_cut_is_forced_to_start_with_the_words_before_it_in_its_context():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    pipeline.on_event(closed(0, 0.0, 6.0, "max_length"), now=6.0)
    pipeline.on_event(started(1, 6.0), now=6.0)
    pipeline.on_event(closed(1, 6.0, 8.0, follows_cut=True, context=audio(2.0)), now=8.0)  # hears 4-6 s
    words = ((" one", 1000, 1500), (" two", 4200, 4800), (" three,", 5600, 6250))
    pipeline.final_decoded(Result("One, two, three,", words_end_ms=6250, words=words), now=8.5)
    after = pipeline.final_request()
    assert after.prefix == "two three,"  # the final's words that began inside its context, as written
    assert after.context_samples == 2 * SR + SR // 4  # and by time, its words begin where those ended
    pipeline.final_decoded(Result("four"), now=9.0)
    # a segment that does not follow a cut gets no prefix
    pipeline.on_event(started(2, 9.0), now=9.0)
    (plain,) = pipeline.on_event(closed(2, 9.0, 10.0, context=audio(1.0)), now=10.0)
    assert plain.prefix == ""


def test_after_a_cut_whose_final_was_cancelled_the_next_segment_begins_at_the_cut():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    pipeline.on_event(closed(0, 0.0, 6.0, "max_length"), now=6.0)
    pipeline.on_event(started(1, 6.0), now=6.0)
    pipeline.on_event(closed(1, 6.0, 8.0, follows_cut=True), now=8.0)
    pipeline.final_cancelled()
    after = pipeline.final_request()
    assert after.context_samples == 0 and len(after.audio) == 2 * SR


def test_after_a_cut_whose_final_failed_the_next_segment_begins_at_the_cut_with_no_prefix():
    pipeline = CaptionPipeline("2pass")
    pipeline.on_event(started(0, 0.0), now=0.0)
    pipeline.on_event(closed(0, 0.0, 6.0, "max_length"), now=6.0)
    pipeline.on_event(started(1, 6.0), now=6.0)
    pipeline.on_event(closed(1, 6.0, 8.0, follows_cut=True, context=audio(2.0)), now=8.0)
    pipeline.final_decoded(None, now=8.5, failure="model exploded")
    after = pipeline.final_request()
    assert after.context_samples == 2 * SR and after.prefix == ""  # all its context heard, nothing forced


def test_arrival_log_tells_when_a_sample_arrived_and_forgets_old_ones():
    log = ArrivalLog(3)
    assert log.time_of(100) is None
    for index in range(1, 4):
        log.add(index * 1600, float(index))
    assert log.time_of(1700) == 2.0
    log.add(4 * 1600, 4.0)
    assert log.time_of(100) is None  # older than what is kept
    assert log.time_of(6400) == 4.0

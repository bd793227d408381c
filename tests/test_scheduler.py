"""The decode scheduler as plain function calls: lanes, drop rules, fair share, cancellation."""

from __future__ import annotations

import itertools

import pytest

from inference.scheduler import JOBS, LIVE, Kind, Lane, Request, Scheduler, Source

_clock = itertools.count()


def req(kind=Kind.FINAL, stream=0, segment=0, engine="whisper", source=LIVE, final_step=False, name=None):
    request = Request(kind, stream, segment, engine, source, submitted=next(_clock), final_step=final_step)
    request.item = name if name is not None else f"{kind.value}:{stream}:{segment}"
    return request


def names(batch):
    return [r.item for r in batch]


def test_live_lanes_in_priority_order_and_background_only_when_no_live_work_waits():
    s = Scheduler(8, "whisper")
    s.add(req(source=Source("file", live=False), stream=9, name="file"))
    s.add(req(Kind.PARTIAL, stream=1, name="partial"))
    s.add(req(Kind.STEP, stream=2, name="step"))
    s.add(req(Kind.FINAL, stream=3, name="final"))
    assert [r.lane for r in s.pending()] == [Lane.FINAL, Lane.STEP, Lane.PARTIAL, Lane.BACKGROUND]
    assert names(s.take_batch()) == ["final", "step", "partial"]
    assert names(s.take_batch()) == ["file"]
    assert s.take_batch() == [] and not s


def test_a_newer_partial_or_the_segments_final_makes_a_partial_stale():
    s = Scheduler(8, "whisper")
    old = req(Kind.PARTIAL, stream=1, segment=0, name="old")
    assert s.add(old) == []
    assert s.add(req(Kind.PARTIAL, stream=1, segment=0, name="new")) == [old]
    later = req(Kind.PARTIAL, stream=2, segment=4, name="later segment")
    s.add(later)
    assert s.add(req(Kind.FINAL, stream=2, segment=3, name="final 3")) == []  # a later segment's partial stays
    assert names(s.add(req(Kind.FINAL, stream=1, segment=0, name="final 0"))) == ["new"]
    assert names(s.take_batch()) == ["final 3", "final 0", "later segment"]


def test_streaming_chunks_run_one_per_stream_per_batch_in_order_and_flushes_are_never_dropped():
    s = Scheduler(8, "whisper")
    for i in range(3):
        s.add(req(Kind.STEP, stream=1, segment=0, name=f"a{i}"))
    s.add(req(Kind.STEP, stream=2, segment=0, name="b0"))
    s.add(req(Kind.STEP, stream=1, segment=0, final_step=True, name="a-flush"))
    assert names(s.take_batch()) == ["a0", "b0"]
    assert names(s.forget_stream(1)) == []  # a flush is queued: its chunks must all run
    assert names(s.take_batch()) == ["a1"]
    assert names(s.drop_stale(1, up_to_segment=0)) == ["a2"]  # an offline final replaces the chunks
    assert names(s.take_batch()) == ["a-flush"]
    s.add(req(Kind.STEP, stream=3, name="c0"))
    assert names(s.forget_stream(3)) == ["c0"]


def test_background_work_is_shared_in_turn_between_owners():
    s = Scheduler(2, "whisper")
    greedy, polite = Source("greedy", live=False), Source("polite", live=False)
    for i in range(8):
        s.add(req(stream=100 + i, source=greedy, name=f"g{i}"))
    for i in range(2):
        s.add(req(stream=200, segment=i, source=polite, name=f"p{i}"))
    batches = [names(s.take_batch()) for _ in range(6)]
    assert batches == [["g0", "g1"], ["p0", "p1"], ["g2", "g3"], ["g4", "g5"], ["g6", "g7"], []]


def test_an_owner_never_served_goes_before_those_already_served():
    s = Scheduler(1, "whisper")
    a, b, c = (Source(x, live=False) for x in "abc")
    s.add(req(source=a, name="a0"))
    assert names(s.take_batch()) == ["a0"]
    s.add(req(source=a, name="a1"))
    s.add(req(source=b, name="b0"))
    s.add(req(source=b, name="b1"))
    assert names(s.take_batch()) == ["b0"]
    s.add(req(source=c, name="c0"))
    assert [names(s.take_batch()) for _ in range(3)] == [["c0"], ["a1"], ["b1"]]


def test_a_background_batch_holds_one_engine_and_other_engines_keep_their_places():
    s = Scheduler(3, "whisper")
    for i, engine in enumerate(["whisper", "funasr", "whisper", "funasr", "whisper", "whisper"]):
        s.add(req(engine=engine, source=JOBS, stream=-1, name=f"{engine}{i}"))
    assert names(s.take_batch()) == ["whisper0", "whisper2", "whisper4"]
    assert names(s.take_batch()) == ["funasr1", "funasr3"]
    assert names(s.take_batch()) == ["whisper5"]


def test_background_batch_size_bounds_background_batches_only():
    s = Scheduler(4, "whisper", background_batch_size=1)
    for i in range(3):
        s.add(req(stream=i, name=f"live{i}"))
        s.add(req(source=JOBS, stream=-1, name=f"job{i}"))
    assert names(s.take_batch()) == ["live0", "live1", "live2"]
    assert names(s.take_batch()) == ["job0"]
    assert s.background_depth == 2 and s.live_depth == 0


def test_a_fast_stream_is_background_work_and_its_partials_still_supersede():
    s = Scheduler(8, "whisper")
    fast = Source("10.0.0.9", live=False)
    first = req(Kind.PARTIAL, stream=5, source=LIVE, name="while live")
    s.add(first)
    assert names(s.add(req(Kind.PARTIAL, stream=5, source=fast, name="once fast"))) == ["while live"]
    s.add(req(Kind.STEP, stream=5, source=fast, name="c0"))
    s.add(req(Kind.STEP, stream=5, source=fast, name="c1"))
    s.add(req(Kind.FINAL, stream=6, name="live final"))
    assert names(s.take_batch()) == ["live final"]
    assert names(s.take_batch()) == ["once fast", "c0"]  # one chunk per stream per batch
    assert names(s.take_batch()) == ["c1"]


def test_cancel_drops_a_gone_requesters_background_work_but_never_live_work():
    s = Scheduler(8, "whisper")
    token = Source("token-a", live=False)
    for i in range(3):
        s.add(req(stream=7, segment=i, source=token, name=f"upload{i}"))
    s.add(req(stream=8, source=token, name="other request"))
    s.add(req(stream=7, segment=9, name="live"))
    assert names(s.cancel(7)) == ["upload0", "upload1", "upload2"]
    assert names(s.take_batch()) == ["live"]
    assert names(s.take_batch()) == ["other request"]


def test_live_requests_must_use_the_live_engine():
    s = Scheduler(4, "whisper")
    with pytest.raises(ValueError, match="live engine"):
        s.add(req(engine="funasr"))
    s.add(req(engine="funasr", source=JOBS, name="job"))
    assert names(s.drain()) == ["job"] and not s


def test_oldest_submitted_is_of_the_work_the_next_batch_serves():
    s = Scheduler(4, "whisper")
    job = req(source=JOBS)
    s.add(job)
    assert s.oldest_submitted() == job.submitted and s.ready_size() == 1
    live = req(Kind.PARTIAL, stream=3)
    s.add(live)
    assert s.oldest_submitted() == live.submitted and s.oldest_final_submitted() is None


def test_a_stream_found_not_live_takes_what_it_queued_into_the_background_lane():
    s = Scheduler(8, "whisper")
    fast = Source("address:10.0.0.9", live=False)
    s.add(req(Kind.FINAL, stream=7, segment=0, name="fast 0"))  # queued while it still looked live
    s.add(req(Kind.FINAL, stream=7, segment=1, name="fast 1"))
    s.add(req(Kind.PARTIAL, stream=7, segment=2, name="fast partial"))
    s.demote(7, fast)
    s.add(req(Kind.FINAL, stream=1, name="live"))
    assert names(s.take_batch()) == ["live"]  # the live stream's final goes first
    assert s.background_queued(7) == 3 and [r.lane for r in s.pending()] == [Lane.BACKGROUND] * 3
    moved = next(r for r in s.pending() if r.item == "fast partial")
    assert s.add(req(Kind.PARTIAL, stream=7, segment=2, name="newer", source=fast)) == [moved]  # rules still hold
    s = Scheduler(1, "whisper", background_batch_size=1)
    s.add(req(Kind.FINAL, stream=7, segment=0, name="a"))
    s.add(req(Kind.FINAL, stream=7, segment=1, name="b"))
    s.demote(7, fast)
    assert [names(s.take_batch()) for _ in range(2)] == [["a"], ["b"]]  # in order


def test_live_speech_holds_background_work_until_its_final_comes():
    s = Scheduler(4, "whisper", background_batch_size=1, hold_s=5.0)
    s.add(req(source=JOBS, stream=-1, name="job0"))
    s.add(req(source=JOBS, stream=-1, name="job1"))
    s.speech_started(1, segment=3)  # a live speaker: a model call started now would delay their final
    assert s.take_batch(now=10.0) == [] and not s.ready(10.0) and s.hold_ends_at() == 15.0
    s.add(req(Kind.PARTIAL, stream=1, segment=3, name="partial 3"))  # live work still goes at once
    assert names(s.take_batch(now=11.0)) == ["partial 3"] and s.take_batch(now=11.0) == []
    s.add(req(Kind.FINAL, stream=1, segment=2, name="final 2"))  # an earlier segment's final: still speaking
    assert names(s.take_batch(now=12.0)) == ["final 2"] and s.take_batch(now=12.0) == []
    s.add(req(Kind.FINAL, stream=1, segment=3, name="final 3"))  # the segment is spoken: the hold ends
    assert names(s.take_batch(now=12.5)) == ["final 3"]
    assert s.ready(12.5) and names(s.take_batch(now=12.5)) == ["job0"] and s.hold_ends_at() is None


def test_background_held_by_live_speech_gets_a_turn_after_hold_s_and_the_wait_starts_again():
    s = Scheduler(4, "whisper", background_batch_size=1, hold_s=5.0)
    for i in range(3):
        s.add(req(source=JOBS, stream=-1, name=f"job{i}"))
    s.speech_started(1, segment=0)
    s.speech_started(2, segment=0)  # two speakers who never pause
    assert s.take_batch(now=0.0) == [] and s.take_batch(now=4.9) == []
    assert names(s.take_batch(now=5.0)) == ["job0"]  # slowed, never starved
    assert s.take_batch(now=5.1) == [] and s.hold_ends_at() == 10.1
    assert names(s.take_batch(now=10.1)) == ["job1"]


def test_only_live_speakers_hold_background_work_and_none_without_hold_s():
    s = Scheduler(4, "whisper", background_batch_size=1, hold_s=5.0)
    s.add(req(source=JOBS, stream=-1, name="job0"))
    s.add(req(source=JOBS, stream=-1, name="job1"))
    s.speech_started(7, segment=0)
    s.demote(7, Source("address:10.0.0.9", live=False))  # found sending faster than real time
    assert names(s.take_batch(now=0.0)) == ["job0"]
    s.speech_started(8, segment=0)
    assert s.take_batch(now=0.1) == []
    s.forget_stream(8)  # the speaker left
    assert names(s.take_batch(now=0.2)) == ["job1"]
    s = Scheduler(4, "whisper", hold_s=0.0)  # a GPU decodes in milliseconds: nothing worth holding for
    s.add(req(source=JOBS, stream=-1, name="job"))
    s.speech_started(1, segment=0)
    assert names(s.take_batch(now=0.0)) == ["job"]
    with pytest.raises(ValueError, match="hold_s"):
        Scheduler(4, "whisper", hold_s=-1)


def test_a_streaming_flush_ends_its_segments_hold():
    s = Scheduler(4, "whisper", hold_s=5.0)
    s.add(req(source=JOBS, stream=-1, name="job"))
    s.speech_started(1, segment=0)
    s.add(req(Kind.STEP, stream=1, segment=0, name="chunk"))
    assert names(s.take_batch(now=0.0)) == ["chunk"] and s.take_batch(now=0.0) == []
    s.add(req(Kind.STEP, stream=1, segment=0, final_step=True, name="flush"))  # online mode: the final
    assert names(s.take_batch(now=0.1)) == ["flush"]
    assert names(s.take_batch(now=0.1)) == ["job"]


def test_a_held_turn_goes_at_exactly_hold_ends_at():
    # The executor sleeps until hold_ends_at(); woken then, it must get the batch (else it spins).
    s = Scheduler(4, "whisper", hold_s=0.1)
    s.add(req(source=JOBS, stream=-1, name="job"))
    s.speech_started(1, segment=0)
    assert s.take_batch(now=0.7) == []
    assert names(s.take_batch(now=s.hold_ends_at())) == ["job"]  # 0.7 + 0.1 - 0.7 < 0.1 in floats

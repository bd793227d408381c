"""The streaming core on espeak-ng speech placed at exactly known sample positions."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from streaming.endpointer import EndpointSettings
from streaming.events import PartialDue, SegmentClosed, SpeechStarted, sample_at, with_context
from streaming.session import SessionSettings, StreamSession
from tests.speech import compose, to_pcm16

TOLERANCE_MS = 60  # detected speech edges vs. the true phrase edges
MS = 16  # samples per millisecond at 16 kHz


def settings(
    rate=16000,
    silence_ms=300,
    max_segment_s=30.0,
    partial_interval_ms=0,
    preroll_ms=300,
    skip_silent_fsmn=True,
    context_s=0.0,
    cut_lookahead_s=0.0,
    context_max_segment_s=0.0,
    long_segment_s=0.0,
    long_silence_ms=0,
):
    return SessionSettings(
        sample_rate_hz=rate,
        endpoint=EndpointSettings(silence_ms, max_segment_s, 40, preroll_ms, 600, long_segment_s, long_silence_ms),
        partial_interval_ms=partial_interval_ms,
        energy_gate_dbfs=-50.0,
        webrtc_aggressiveness=2,
        fsmn_speech_threshold=0.5,
        ring_buffer_s=35.0,
        context_s=context_s,
        cut_lookahead_s=cut_lookahead_s,
        context_max_segment_s=context_max_segment_s,
        skip_silent_fsmn=skip_silent_fsmn,
    )


def stream(scorer, audio, rate=16000, chunk_ms=100, **kw):
    return [event for _, event in stream_timed(scorer, audio, rate, chunk_ms, **kw)]


def stream_timed(scorer, audio, rate=16000, chunk_ms=100, **kw):
    """(samples fed when the event came out, event) for every event of the stream."""
    session = StreamSession(settings(rate=rate, **kw), scorer.new_state)
    pcm, step, out = to_pcm16(audio), rate * chunk_ms // 1000 * 2, []
    for offset in range(0, len(pcm), step):
        chunk = pcm[offset : offset + step]
        out += [(offset // 2 + len(chunk) // 2, event) for event in session.feed(chunk, scorer)]
    return out + [(len(audio), event) for event in session.finish()]


def closed(events):
    return [e for e in events if isinstance(e, SegmentClosed)]


def assert_edges(segment, start, end, tolerance_ms=TOLERANCE_MS):
    assert abs(segment.speech_start - start) <= tolerance_ms * MS, (segment.start_ms, start // MS)
    assert abs(segment.speech_end - end) <= tolerance_ms * MS, (segment.end_ms, end // MS)


def test_segments_follow_known_speech_boundaries(scorer):
    script = compose([1.0, "hello world", 1.0, "the quick brown fox jumps over the lazy dog", 1.5, "good morning", 0.8])
    segments = closed(stream(scorer, script.audio))
    assert len(segments) == 3
    for segment, (start, end) in zip(segments, script.spans):
        assert_edges(segment, start, end)
        assert segment.reason == "silence"


def test_gap_shorter_than_silence_ms_joins_and_longer_splits(scorer):
    script = compose([0.5, "good morning", 0.25, "everyone here", 0.45, "welcome back", 0.8])
    segments = closed(stream(scorer, script.audio))
    assert len(segments) == 2
    assert_edges(segments[0], script.spans[0][0], script.spans[1][1])
    assert_edges(segments[1], *script.spans[2])
    # the same audio with a per-stream silence_ms of 500 keeps all three phrases together
    assert len(closed(stream(scorer, script.audio, silence_ms=500))) == 1


def test_segment_closes_silence_ms_after_speech_ends(scorer):
    script = compose([0.5, "hello world", 2.0])
    session = StreamSession(settings(), scorer.new_state)
    pcm, closed_at = to_pcm16(script.audio), None
    for offset in range(0, len(pcm), 320):  # 10 ms chunks: find the exact moment of closing
        if closed(session.feed(pcm[offset : offset + 320], scorer)):
            closed_at = offset // 2 + 160
            break
    assert closed_at is not None
    delay_ms = (closed_at - script.spans[0][1]) / MS
    # 300 ms of silence, plus FSMN's look-ahead (45 ms) and the edge tolerance
    assert 300 - TOLERANCE_MS <= delay_ms <= 300 + 45 + TOLERANCE_MS


def test_preroll_keeps_the_first_syllable(scorer):
    script = compose([1.0, "speech", 1.0])
    (segment,) = closed(stream(scorer, script.audio))
    onset = script.spans[0][0]
    assert segment.start <= onset - 250 * MS  # 300 ms pre-roll, minus detection jitter
    np.testing.assert_array_equal(segment.audio, script.audio[segment.start : segment.end])
    no_preroll = closed(stream(scorer, script.audio, preroll_ms=0))[0]
    assert no_preroll.start == no_preroll.speech_start


def test_long_speech_is_cut_at_max_segment_without_losing_audio(scorer):
    sentence = "the quick brown fox jumps over the lazy dog and runs away"
    parts: list = [0.3]
    for _ in range(16):
        parts += [sentence, 0.1]
    script = compose(parts)
    assert len(script.audio) > 40 * 16000
    segments = closed(stream(scorer, script.audio))
    assert segments[0].reason == "max_length"
    assert all(s.end - s.start <= 30 * 16000 for s in segments)
    for before, after in zip(segments, segments[1:]):
        assert after.start == before.end  # contiguous through the cut
    assert_edges(segments[-1], segments[-1].speech_start, script.spans[-1][1])


@pytest.mark.parametrize("chunk_ms", [100, 12000])
def test_a_cut_carries_the_audio_after_it_even_when_all_arrives_at_once(scorer, chunk_ms):
    # A client that sends faster than real time hands the session its audio in bursts: one scoring
    # round can cut a segment, close the rest at the pause and go quiet. The cut's look-ahead must
    # still be read then (the buffer was once released first: IndexError, the stream lost).
    script = compose([0.3, "the quick brown fox jumps over the lazy dog and runs away", 4.0])
    assert len(script.audio) <= 12 * 16000
    session = StreamSession(settings(max_segment_s=2.5, context_s=3.0, cut_lookahead_s=1.0), scorer.new_state)
    pcm, step, events = to_pcm16(script.audio), chunk_ms * 32, []
    for offset in range(0, len(pcm), step):
        events += session.feed(pcm[offset : offset + step], scorer)
    segments = closed(events + session.finish())
    cuts = [s for s in segments if s.reason == "max_length"]
    assert cuts and segments[-1].reason != "max_length"
    for before, after in zip(segments, segments[1:]):
        assert after.start == before.end and after.follows_cut == (before.reason == "max_length")
        if before.reason == "max_length":  # 1 s of what follows, or all of it when the next segment closes first
            assert len(before.after) >= min(16000, after.end - after.start)
            np.testing.assert_array_equal(before.after, script.audio[before.end : before.end + len(before.after)])
    assert not segments[0].follows_cut


def test_a_long_segment_closed_at_a_short_pause_is_joined_like_a_cut(scorer):
    # 200 ms pauses: shorter than silence_ms, so without long_segment_s this is one segment.
    phrases = ["the quick brown fox jumps over the lazy dog", "and runs away into the woods", "hello world again"]
    script = compose([0.3, phrases[0], 0.2, phrases[1], 0.2, phrases[2], 1.0])
    assert [s.reason for s in closed(stream(scorer, script.audio))] == ["silence"]
    timed = stream_timed(
        scorer, script.audio, long_segment_s=1.5, long_silence_ms=150, context_s=1.0, cut_lookahead_s=1.0
    )
    segments = closed(event for _, event in timed)
    # The last one also closes at 150 ms of its trailing silence (it is long too).
    assert [s.reason for s in segments] == ["pause", "pause", "pause"]
    for before, after in zip(segments, segments[1:]):
        assert before.end - before.start >= 1.5 * 16000
        # Closed at the pause, not later: within the 200 ms gap after the phrase.
        gap_start = script.spans[segments.index(before)][1]
        assert gap_start + 150 * MS <= before.end <= gap_start + 200 * MS + TOLERANCE_MS * MS
        # As after a cut: the next segment starts there, waits for the final before it, and the
        # closed one carries the second of audio after it.
        assert after.start == before.end and after.follows_cut and len(after.context) == 16000
        np.testing.assert_array_equal(before.after, script.audio[before.end : before.end + 16000])
    assert segments[-1].speech_end >= script.spans[-1][1] - TOLERANCE_MS * MS
    # It is handed on once the pause has lasted silence_ms, not after the second of look-ahead:
    # the speaker stopped, and its final should come as soon as after any silence.
    handed_on_at = [(at, event) for at, event in timed if isinstance(event, SegmentClosed)]
    last_at, last = handed_on_at[-1]
    assert last.end + 150 * MS <= last_at <= last.end + 150 * MS + 100 * MS  # one 100 ms chunk late at most
    first_at, first = handed_on_at[0]
    assert first_at >= first.end + 16000  # speech went on: it waited for its look-ahead


def test_long_segments_get_no_context_unless_they_follow_a_cut(scorer):
    # Whisper skipped words inside an 8 s phone-call segment heard after the call's earlier audio,
    # and got them alone; short phrases need the context. A segment after a cut keeps it: its first
    # word may have begun before it.
    script = compose([1.5, "hello world", 0.6, "the quick brown fox jumps over the lazy dog and runs away", 0.6])
    limit_s = 2.0
    events = stream(scorer, script.audio, context_s=1.0, context_max_segment_s=limit_s, partial_interval_ms=500)
    short, long = closed(events)
    assert short.end - short.start <= limit_s * 16000 and len(short.context) == 16000
    assert long.end - long.start > limit_s * 16000 and len(long.context) == 0
    partials = [p for p in events if isinstance(p, PartialDue) and p.segment_id == long.segment_id]
    assert {len(p.context) > 0 for p in partials} == {True, False}  # until the open segment grew past the limit
    assert all(len(p.context) == 0 for p in partials if p.end - p.start > limit_s * 16000)
    cut = closed(stream(scorer, script.audio, max_segment_s=2.5, context_s=1.0, context_max_segment_s=1.0))
    assert cut[1].reason == "max_length" and not cut[1].follows_cut and len(cut[1].context) == 0
    assert all(s.follows_cut and len(s.context) == 16000 for s in cut[2:])
    assert any(s.end - s.start > 16000 for s in cut[2:])


def test_the_words_after_a_cut_begin_where_the_final_before_it_ended():
    # What the segment after a length cut is decoded with: its context, its audio, and where its
    # words begin - the cut itself, or (words_from) where the final before the cut placed its last
    # word, even inside that segment's own audio when that word ran past the cut.
    audio = np.arange(100, dtype=np.float32)
    cut = SegmentClosed(0, 0, 40, 0, 40, "max_length", audio[:40], after=audio[40:50])
    rest = SegmentClosed(1, 40, 100, 40, 100, "end_of_stream", audio[40:], context=audio[10:40], follows_cut=True)
    decoded, context, after = with_context(rest)
    np.testing.assert_array_equal(decoded, audio[10:])
    assert (context, after) == (30, 0)
    assert with_context(rest, 35)[1:] == (25, 0) and with_context(rest, 44)[1:] == (34, 0)
    assert with_context(rest, 0)[1] == 0 and with_context(rest, 200)[1] == 90  # within the audio
    decoded, context, after = with_context(cut)
    assert (context, after) == (0, 10) and sample_at(cut, 1) == 16  # 1 ms = 16 samples from its start
    assert sample_at(rest, 0) == 10  # what was decoded for `rest` begins with its context


def test_per_stream_max_segment_override(scorer):
    script = compose([0.3, "the quick brown fox jumps over the lazy dog", 0.1, "and runs away", 0.5])
    segments = closed(stream(scorer, script.audio, max_segment_s=2.5))
    assert len(segments) >= 2 and all(s.end - s.start <= 2.5 * 16000 for s in segments)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampled_streams_find_the_same_boundaries(scorer, rate):
    script = compose([0.7, "hello world", 1.0, "good morning everyone", 0.8])
    audio = soxr.resample(script.audio, 16000, rate).astype(np.float32)
    segments = closed(stream(scorer, audio, rate=rate))
    assert len(segments) == 2
    for segment, (start, end) in zip(segments, script.spans):
        assert_edges(segment, start, end)


def test_background_noise_above_the_gate_is_not_speech(scorer):
    rng = np.random.default_rng(7)
    script = compose([1.5, "good morning everyone", 1.5])
    noisy = script.audio + rng.normal(0, 10 ** (-40 / 20), len(script.audio)).astype(np.float32)
    segments = closed(stream(scorer, noisy))
    assert len(segments) == 1
    # In noise the decaying end of the last word blurs into the hiss: allow 200 ms at the edges.
    assert_edges(segments[0], *script.spans[0], tolerance_ms=200)


def test_stream_ending_mid_speech_is_finalized_with_all_audio(scorer):
    script = compose([0.5, "the quick brown fox jumps"])
    events = stream(scorer, script.audio)
    (segment,) = closed(events)
    assert segment.reason == "end_of_stream"
    assert segment.end == len(script.audio)
    assert abs(segment.speech_end - script.spans[0][1]) <= TOLERANCE_MS * MS


def test_partials_are_requested_at_the_configured_interval(scorer):
    script = compose([0.5, "the quick brown fox jumps over the lazy dog", 1.0])
    events = stream(scorer, script.audio, partial_interval_ms=500)
    started = next(e for e in events if isinstance(e, SpeechStarted))
    partials = [e for e in events if isinstance(e, PartialDue)]
    speech_s = (script.spans[0][1] - script.spans[0][0]) / 16000
    assert len(partials) >= int(speech_s / 0.5) - 1
    gaps = np.diff([p.end for p in partials]) / MS
    assert all(500 <= g <= 600 for g in gaps)
    for p in partials:
        assert p.start == started.start
        np.testing.assert_array_equal(p.audio, script.audio[p.start : p.end])


@pytest.mark.parametrize("lead_ms", range(0, 100, 10))
def test_segment_closes_in_the_chunk_that_completes_the_silence(scorer, lead_ms):
    # FSMN needs 45 ms of audio past a frame; the closing frames must not wait a whole chunk for it.
    script = compose([0.5 + lead_ms / 1000, "hello world", 0.3, "good morning", 1.0])
    session = StreamSession(settings(), scorer.new_state)
    pcm, step, found = to_pcm16(script.audio), 1600 * 2, []
    for offset in range(0, len(pcm), step):
        for segment in closed(session.feed(pcm[offset : offset + step], scorer)):
            found.append(segment)
            received = min(len(pcm), offset + step) // 2
            assert received - segment.end < 1600, (lead_ms, received, segment.end)
    whole = closed(stream(scorer, script.audio, chunk_ms=10_000))
    assert [(s.start, s.end) for s in found] == [(s.start, s.end) for s in whole[: len(found)]]
    assert len(found) == 2


def test_a_pause_below_the_gate_closes_its_segment_as_it_arrives(scorer):
    # Frames below the energy gate are silence whatever FSMN says, so the chunk that completes the
    # silence closes the segment in push(), without waiting for the model. Here every FSMN answer
    # comes one chunk late (a busy VAD worker), as in the server's pump.
    script = compose([0.5, "hello world", 0.6, "good morning", 0.8])
    reference = [(s.start, s.end, s.speech_start, s.speech_end) for s in closed(stream(scorer, script.audio))]
    session = StreamSession(settings(), scorer.new_state)
    pcm, step = to_pcm16(script.audio), 1600 * 2
    events, on_arrival, in_flight = [], [], None
    for offset in range(0, len(pcm), step):
        arrived = session.push(pcm[offset : offset + step])
        for segment in closed(arrived):
            received = min(len(pcm), offset + step) // 2
            assert received - segment.end < 1600, (received, segment.end)
        on_arrival += closed(arrived)
        events += arrived
        if in_flight is not None:
            events += session.apply(in_flight)
        work = session.take_work()
        in_flight = scorer.score([(work.state, work.samples)])[0] if work.needed else None
    if in_flight is not None:
        events += session.apply(in_flight)
    found = [(s.start, s.end, s.speech_start, s.speech_end) for s in closed(events + session.finish())]
    assert found == reference and len(found) == 2
    assert len(on_arrival) == 2  # both pauses are digital silence: neither waited for FSMN


def test_chunk_size_does_not_change_the_result(scorer):
    script = compose([0.5, "hello world", 0.6, "good morning", 0.5])
    a = [(s.start, s.end) for s in closed(stream(scorer, script.audio, chunk_ms=20))]
    b = [(s.start, s.end) for s in closed(stream(scorer, script.audio, chunk_ms=370))]
    assert a == b and len(a) == 2


def test_skipping_fsmn_on_clear_silence_keeps_the_same_boundaries(scorer):
    script = compose([1.0, "hello world", 1.2, "good morning everyone", 0.25, "welcome back", 1.5, "thanks", 0.6])
    always = [
        (s.start, s.end, s.speech_start, s.speech_end)
        for s in closed(stream(scorer, script.audio, skip_silent_fsmn=False))
    ]
    skipping = [(s.start, s.end, s.speech_start, s.speech_end) for s in closed(stream(scorer, script.audio))]
    assert len(always) == 3
    assert skipping == always


def test_streams_scored_together_match_streams_scored_alone(scorer):
    scripts = [
        compose([0.5, "hello world", 1.0, "good morning everyone", 0.6]),
        compose([0.2, "the quick brown fox jumps over the lazy dog", 0.8]),
        compose([1.3, "please open the door", 0.4, "thank you", 0.9]),
    ]
    alone = [
        [(s.start, s.end) for s in closed(stream(scorer, sc.audio, chunk_ms=chunk))]
        for sc, chunk in zip(scripts, (100, 60, 130))
    ]
    sessions = [StreamSession(settings(), scorer.new_state) for _ in scripts]
    pcms = [to_pcm16(sc.audio) for sc in scripts]
    steps = [1600 * 2, 960 * 2, 2080 * 2]  # different chunk sizes: unequal frame counts per batch
    events = [[] for _ in scripts]
    offsets = [0, 0, 0]
    while any(o < len(p) for o, p in zip(offsets, pcms)):
        batch = []
        for i, session in enumerate(sessions):
            if offsets[i] < len(pcms[i]):
                events[i] += session.push(pcms[i][offsets[i] : offsets[i] + steps[i]])
                offsets[i] += steps[i]
                batch.append((i, session.take_work()))
        needed = [(i, w) for i, w in batch if w.needed]
        probs = dict(zip([i for i, _ in needed], scorer.score([(w.state, w.samples) for _, w in needed])))
        for i, _ in batch:
            events[i] += sessions[i].apply(probs.get(i))
    together = [[(s.start, s.end) for s in closed(ev + session.finish())] for ev, session in zip(events, sessions)]
    assert together == alone
    assert [len(a) for a in alone] == [2, 1, 2]


def test_fsmn_is_not_asked_about_noise_webrtcvad_rejects(scorer):
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 10 ** (-35 / 20), 16000 * 4).astype(np.float32)  # well above the -50 dBFS gate
    session = StreamSession(settings(), scorer.new_state)
    pcm, needed, total = to_pcm16(noise), 0, 0
    for offset in range(0, len(pcm), 3200):
        session.push(pcm[offset : offset + 3200])
        work = session.take_work()
        total += 1
        needed += work.needed
        session.apply(scorer.score([(work.state, work.samples)])[0] if work.needed else None)
    assert not closed(session.finish())
    assert needed <= total // 2, (needed, total)  # measured 16 of 40 here


def test_audio_is_held_only_while_it_may_still_be_needed(scorer):
    # A connection idling between phrases must not hold ring_buffer_s of audio (35 s x 32 KB/s):
    # only the open segment, or the pre-roll / FSMN warm-up that a new segment may need.
    script = compose([1.0, "hello world", 6.0, "good morning everyone", 4.0])
    session = StreamSession(settings(), scorer.new_state)
    pcm, step = to_pcm16(script.audio), 3200
    held_in_speech, segments = [], []
    for offset in range(0, len(pcm), step):
        for event in session.feed(pcm[offset : offset + step], scorer):
            if isinstance(event, SegmentClosed):
                segments.append(event)
        if session._endpointer.in_segment:
            held_in_speech.append(session._buffer.bytes_held)
    assert [len(s.audio) for s in segments] == [s.end - s.start for s in segments] and len(segments) == 2
    assert session._buffer.bytes_held <= 2 * 32000  # idle after the last phrase: at most two 1 s blocks
    assert max(held_in_speech) <= 4 * 32000  # a 2 s phrase with its pre-roll, not the whole stream


def test_segments_carry_the_audio_before_them_as_context(scorer):
    # Whisper decodes a short phrase right only with what was said before it (issue 14): each
    # segment and partial carries up to context_s of the stream's preceding audio, exactly the
    # samples before its start, while the buffer still frees everything older.
    script = compose([1.0, "hello world", 6.0, "good morning everyone", 0.5, "please open the door", 4.0])
    session = StreamSession(settings(context_s=2.0, partial_interval_ms=500), scorer.new_state)
    pcm, step = to_pcm16(script.audio), 3200
    events = []
    for offset in range(0, len(pcm), step):
        events += session.feed(pcm[offset : offset + step], scorer)
        assert session._buffer.bytes_held <= 8 * 32000  # the open segment and 2 s before it, no more
    events += session.finish()
    segments = closed(events)
    assert len(segments) == 3
    expected = np.round(script.audio * 32768).clip(-32768, 32767) / 32768
    for segment in segments:
        assert len(segment.context) == min(segment.start, 2 * 16000)
        assert np.allclose(segment.context, expected[segment.start - len(segment.context) : segment.start], atol=1e-4)
    partials = [e for e in events if isinstance(e, PartialDue)]
    assert partials and all(len(p.context) == min(p.start, 32000) for p in partials)
    assert len(closed(stream(scorer, script.audio))[1].context) == 0  # off by default

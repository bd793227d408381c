"""The endpointer on exact synthetic frame decisions (10 ms each)."""

import pytest

from streaming.endpointer import Closed, Endpointer, EndpointSettings, Opened


def run(pattern, **overrides):
    settings = dict(silence_ms=300, max_segment_s=30.0, speech_onset_ms=40, preroll_ms=300, cut_search_ms=600)
    settings.update(overrides)
    ep = Endpointer(EndpointSettings(**settings))
    out = []
    for is_speech, level in pattern:
        out += ep.step(is_speech, level)
    return out + ep.finish()


def frames(*spans):
    """spans of (is_speech, count) -> per-frame (is_speech, level)."""
    return [(s, -20.0 if s else -70.0) for s, n in spans for _ in range(n)]


def test_silence_of_exactly_silence_ms_closes_and_one_frame_less_does_not():
    closed = [
        e
        for e in run(frames((False, 100), (True, 50), (False, 30), (True, 50), (False, 29), (True, 20)))
        if isinstance(e, Closed)
    ]
    assert [(c.speech_start, c.speech_end, c.reason) for c in closed] == [
        (100, 150, "silence"),
        (180, 279, "end_of_stream"),
    ]


def test_preroll_starts_before_onset_but_never_inside_previous_segment():
    events = run(frames((False, 100), (True, 50), (False, 35), (True, 50), (False, 40)))
    opened = [e for e in events if isinstance(e, Opened)]
    assert opened[0].start == 70 and opened[0].speech_start == 100
    assert opened[1].speech_start == 185 and opened[1].start == 180  # clipped at first segment's end


def test_short_click_does_not_open_a_segment():
    assert run(frames((False, 50), (True, 3), (False, 100))) == []


def test_max_length_cut_at_quietest_frame_loses_no_audio():
    pattern = [(True, -20.0 - (30.0 if i == 2950 else 0)) for i in range(4000)]
    events = run(pattern)
    closed = [e for e in events if isinstance(e, Closed)]
    assert closed[0].reason == "max_length" and closed[0].end == 2951
    assert closed[1].start == closed[0].end  # contiguous: nothing dropped or duplicated
    assert all(c.end - c.start <= 3000 for c in closed)
    assert closed[-1].end == 4000


def test_a_long_segment_closes_at_a_shorter_pause_and_a_young_one_does_not():
    # 10 s of speech with a 150 ms pause at 1 s and at 4 s: only the one after long_segment_s closes.
    pattern = frames((True, 100), (False, 15), (True, 285), (False, 15), (True, 585))
    closed = [e for e in run(pattern, long_segment_s=3.0, long_silence_ms=150) if isinstance(e, Closed)]
    # "pause": it may be inside a word, so the next segment joins it as a cut (streaming/cuts.py).
    assert [(c.start, c.end, c.reason) for c in closed] == [(0, 415, "pause"), (415, 1000, "end_of_stream")]
    # Off (the default), the same audio is one segment; a pause one frame short of 150 ms never closes.
    assert [c.end for c in run(pattern) if isinstance(c, Closed)] == [1000]
    shorter = frames((True, 100), (False, 15), (True, 285), (False, 14), (True, 586))
    assert [c.end for c in run(shorter, long_segment_s=3.0, long_silence_ms=150) if isinstance(c, Closed)] == [1000]


def test_the_age_of_a_segment_counts_from_its_start_with_preroll_and_a_new_segment_starts_young():
    # Opened at frame 100 with 300 ms preroll: it starts at 70, so it is 3 s old at frame 370.
    pattern = frames((False, 100), (True, 255), (False, 15), (True, 100), (False, 15), (True, 50))
    closed = [e for e in run(pattern, long_segment_s=3.0, long_silence_ms=150) if isinstance(e, Closed)]
    # The first pause ends at 370 (3 s after 70): closed there. The second, 1.15 s into the next
    # segment, is too young to close it.
    assert [(c.start, c.end) for c in closed] == [(70, 370), (370, 535)]


def test_the_frames_still_needed_to_close_follow_the_segment_age():
    ep = Endpointer(EndpointSettings(silence_ms=300, max_segment_s=30.0, speech_onset_ms=40, preroll_ms=0,
                                     cut_search_ms=600, long_segment_s=1.0, long_silence_ms=100))  # fmt: skip
    for is_speech, level in frames((True, 50), (False, 5)):
        ep.step(is_speech, level)
    assert ep.silence_frames_to_close == 30 - 5
    for is_speech, level in frames((True, 60), (False, 5)):
        ep.step(is_speech, level)
    assert ep.silence_frames_to_close == 10 - 5


@pytest.mark.parametrize(
    "bad",
    [
        dict(silence_ms=0),
        dict(speech_onset_ms=0),
        dict(preroll_ms=-1),
        dict(max_segment_s=0),
        dict(long_segment_s=-1.0),
        dict(long_silence_ms=400, long_segment_s=3.0),  # longer than silence_ms
        dict(long_silence_ms=0, long_segment_s=3.0),
    ],
)
def test_bad_settings_raise_value_error_naming_them(bad):
    settings = dict(silence_ms=300, max_segment_s=30.0, speech_onset_ms=40, preroll_ms=300, cut_search_ms=600)
    settings.update(bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        EndpointSettings(**settings)

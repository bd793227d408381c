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


@pytest.mark.parametrize(
    "bad", [dict(silence_ms=0), dict(speech_onset_ms=0), dict(preroll_ms=-1), dict(max_segment_s=0)]
)
def test_bad_settings_raise_value_error_naming_them(bad):
    settings = dict(silence_ms=300, max_segment_s=30.0, speech_onset_ms=40, preroll_ms=300, cut_search_ms=600)
    settings.update(bad)
    with pytest.raises(ValueError, match=next(iter(bad))):
        EndpointSettings(**settings)

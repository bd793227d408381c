"""Cuts for length with the funasr engine: Paraformer decodes the audio around a cut and only the
characters timed inside the segment are kept (streaming.cuts), so the character a cut goes through
is written once. Over tiny random FunASR models (stand-ins for hub weights): these check which
characters are kept by their times - not words."""

from __future__ import annotations

import json

import pytest

from inference.engines.base import DecodeOptions
from inference.engines.funasr import _within
from tests.engines import RecordingEngine
from tests.speech import compose
from tests.wsclient import finals, transcribe

MS = 16


def item(*tokens: tuple[str, int, int]) -> dict:
    return {"text": " ".join(t for t, _, _ in tokens), "timestamp": [[a, b] for _, a, b in tokens]}


def test_a_character_across_the_cut_is_kept_by_one_side_only():
    answer = item(("今", 700, 880), ("天", 880, 1090), ("好", 1090, 1300))  # "天" straddles 1000 ms, middle 985
    before, before_end = _within(answer, (0, 1000))
    after, _ = _within(answer, (1000, 2000))
    assert before["text"] == "今 天" and before_end == 1090
    assert after["text"] == "好" and after["timestamp"] == [[1090, 1300]]


def test_an_answer_whose_text_and_times_do_not_pair_cannot_be_cut():
    assert _within({"text": "今 天", "timestamp": [[0, 100]]}, (0, 1000)) is None
    assert _within({"text": "今 天"}, (0, 1000)) is None
    assert _within(item(), (0, 1000)) == ({"text": "", "timestamp": []}, None)


@pytest.fixture
def speech():
    return compose([0.2, "good morning everyone please open the door", 0.2]).audio


def test_paraformer_keeps_the_characters_timed_inside_the_segment(funasr_engine, speech):
    context, after = 16000, 8000
    whole = funasr_engine._offline.generate(input=[speech], batch_size=1, disable_pbar=True)[0]
    (result,) = funasr_engine.decode([speech], [DecodeOptions(context_samples=context, after_samples=after)])
    span = (context // MS, (len(speech) - after) // MS)
    inside = [(a, b) for a, b in whole["timestamp"] if span[0] <= (a + b) / 2 < span[1]]
    assert 0 < len(inside) < len(whole["timestamp"])  # the stand-in times characters all through the clip
    assert list(result.timestamps) == inside  # (times count from the start of the audio given)
    assert result.words_end_ms == inside[-1][1]


def test_an_answer_that_cannot_be_cut_is_decoded_again_without_context(funasr_engine, speech, monkeypatch):
    real, calls = funasr_engine._offline.generate, []

    def unpaired(*args, **kwargs):  # first call: one timestamp short; then as the model answers
        out = real(*args, **kwargs)
        calls.append(len(kwargs["input"][0]))
        if len(calls) == 1:
            out[0]["timestamp"] = out[0]["timestamp"][:-1]
        return out

    monkeypatch.setattr(funasr_engine._offline, "generate", unpaired)
    options = DecodeOptions(context_samples=16000, after_samples=8000)
    (result,) = funasr_engine.decode([speech], [options])
    assert calls == [len(speech), len(speech) - 24000]  # then the segment alone
    monkeypatch.setattr(funasr_engine._offline, "generate", real)
    (alone,) = funasr_engine.decode([speech[16000:-8000]], [DecodeOptions()])
    assert result.text == alone.text and result.words_end_ms is None
    assert list(result.timestamps) == [(a + 1000, b + 1000) for a, b in alone.timestamps]


async def test_a_long_stream_cut_for_length_places_each_character_once(start_server, funasr_engine):
    engine = RecordingEngine(funasr_engine)
    engine.streaming, engine.new_stream_state, engine.stream = False, None, None  # re-decoded partials
    server = start_server(engine=engine, inference={"engine": "funasr"})
    talk = compose([0.3, "the quick brown fox jumps over the lazy dog and runs into the forest", 0.6])
    replies = await transcribe(server.url, talk.audio, max_segment_s=2.0)
    got = [f for f in finals(replies) if f.get("timestamp")]
    assert any(f["end_reason"] == "max_length" for f in finals(replies))
    for before, after in zip(got, got[1:]):
        ends = [b for _, b in stamps_of(before)]
        middles = [(a + b) / 2 for a, b in stamps_of(after)]
        if before["end_reason"] == "max_length":  # nothing after the cut is placed before its last character
            assert min(middles) >= max(ends) - 1, (before, after)
    cut_requests = [o for o in engine.options if o.context_samples or o.after_samples]
    assert cut_requests, "the segments around the cuts were decoded with the audio around them"


def stamps_of(final: dict) -> list[tuple[int, int]]:
    return [(a, b) for a, b in json.loads(final["timestamp"])]  # FunASR's protocol sends it as a JSON string


def test_cut_settings_per_engine():
    from tests.conftest import make_config

    config = make_config()
    assert config.cut_joins("funasr") == (config.funasr.cut_context_s, config.funasr.cut_lookahead_s) != (0, 0)
    assert config.cut_joins("whisper") == (config.whisper.context_s, config.whisper.cut_lookahead_s)
    assert config.cut_joins(None) == config.cut_joins("instant") == (0.0, 0.0)
    off = make_config(funasr={"cut_context_s": 0.0, "cut_lookahead_s": 0.0})
    assert off.cut_joins("funasr") == (0.0, 0.0)

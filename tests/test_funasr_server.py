"""The server with the funasr engine (tiny random stand-in models): FunASR's modes end to end over
loopback - message order, timing fields, per-connection streaming caches, hotword plumbing."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.funasr_client import run_funasr_client
from tests.speech import compose, to_pcm16
from tests.wsclient import connect, finals, recv, send_audio, start, transcribe

TWO_SEGMENTS = compose([0.3, "good morning everyone", 0.8, "please open the door", 0.5])
OTHER = compose([0.3, "the weather is nice today", 0.6])


@pytest.fixture
def funasr_server(start_server, funasr_engine):
    return start_server(engine=funasr_engine)


def letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def by_segment(replies):
    segments: dict[int, list[dict]] = {}
    for reply in replies:
        if reply.get("type") in ("partial", "final"):
            segments.setdefault(reply["segment_id"], []).append(reply)
    return segments


async def test_2pass_streams_online_partials_then_an_offline_final_per_segment(funasr_server):
    replies = await transcribe(funasr_server.url, TWO_SEGMENTS.audio, realtime=True, mode="2pass")
    assert replies[-1]["type"] == "end" and replies[-1]["is_final"] is True
    segments = by_segment(replies)
    assert len(segments) == 2
    for segment in segments.values():
        kinds = [r["mode"] for r in segment]
        assert kinds[-1] == "2pass-offline" and kinds.count("2pass-offline") == 1
        assert "2pass-online" in kinds  # the streaming model spoke while the segment was open
        final = segment[-1]
        for key in ("start_ms", "end_ms", "queue_ms", "decode_ms", "final_ms", "final_text"):
            assert key in final
        assert final["start_ms"] < final["end_ms"]
        partials = segment[:-1]
        # Streaming text is never revised: the deltas add up to the stable text, and nothing is unstable.
        assert "".join(p["text"] for p in partials) == partials[-1]["stable"]
        assert all(p["unstable"] == "" for p in partials)


async def test_online_mode_final_comes_from_the_streaming_model(funasr_server, funasr_engine):
    replies = await transcribe(funasr_server.url, TWO_SEGMENTS.audio, mode="online")
    assert all(r["mode"] == "online" for r in replies if "mode" in r)
    for segment in by_segment(replies).values():
        final = segment[-1]
        assert final["type"] == "final"
        printed = "".join(r["text"] for r in segment)  # what an append-only client shows
        # It cannot show punctuation inserted into text already printed; every word it must show.
        assert letters(printed) == letters(final["final_text"])
        assert printed.endswith(final["text"]) and final["final_text"].endswith(final["text"].strip())


async def test_offline_mode_answers_once_with_the_whole_transcript(funasr_server):
    replies = await transcribe(funasr_server.url, TWO_SEGMENTS.audio, mode="offline")
    assert [r["type"] for r in replies] == ["end"]
    assert len(replies[0]["segments"]) == 2 and replies[0]["text"]


async def test_funasr_style_client_in_2pass_prints_the_offline_transcript(funasr_server):
    result = await run_funasr_client(funasr_server.url, to_pcm16(TWO_SEGMENTS.audio), "2pass")
    assert result.acknowledgement["is_final"] is True
    offline = [m["text"] for m in result.messages if m.get("mode") == "2pass-offline" and m.get("type") == "final"]
    assert len(offline) == 2 and result.offline_text == "".join(offline)


async def test_concurrent_connections_keep_their_own_streaming_caches(funasr_server):
    async def online_finals(audio):
        return [f["final_text"] for f in finals(await transcribe(funasr_server.url, audio, mode="online"))]

    alone_a = await online_finals(TWO_SEGMENTS.audio)
    alone_b = await online_finals(OTHER.audio)
    together_a, together_b = await asyncio.gather(online_finals(TWO_SEGMENTS.audio), online_finals(OTHER.audio))
    assert alone_a and alone_b and alone_a != alone_b
    assert (together_a, together_b) == (alone_a, alone_b)


async def test_server_and_client_hotwords_reach_the_model_call(start_server, funasr_engine, monkeypatch, tmp_path):
    hotword_file = tmp_path / "hotwords.txt"
    hotword_file.write_text("达摩院 30\n", "utf-8")
    server = start_server(engine=funasr_engine, inference={"hotword_file": str(hotword_file)})
    seen = []
    real = funasr_engine._offline.generate

    def generate(*args, **kwargs):
        seen.append(kwargs.get("hotword"))
        return real(*args, **kwargs)

    monkeypatch.setattr(funasr_engine._offline, "generate", generate)
    await transcribe(server.url, OTHER.audio, mode="offline", hotwords=json.dumps({"阿里巴巴": 20}))
    await transcribe(server.url, OTHER.audio, mode="offline", hotwords="")
    assert seen == ["达摩院 阿里巴巴", "达摩院"]


async def test_bad_input_on_one_funasr_connection_leaves_another_untouched(funasr_server):
    async with await connect(funasr_server.url) as bad:
        await start(bad, mode="2pass")
        await bad.send(b"\x01")  # an odd byte count is not 16-bit PCM
        error = await recv(bad)
        assert error["type"] == "error" and error["code"] == "bad_audio"
        good = await transcribe(funasr_server.url, OTHER.audio, mode="2pass")
        await send_audio(bad, OTHER.audio)
        await bad.send(json.dumps({"is_speaking": False}))
        rest = []
        while not (rest and rest[-1].get("is_final")):
            rest.append(await recv(bad))
    assert len(finals(good)) == 1 and len(finals(rest)) == 1

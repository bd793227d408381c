"""The server over real loopback sockets: handshake, caption order, flushing, concurrency, bad input.

Most tests here check protocol and policy, and their servers decode with KnownPhrasesEngine
(tests/engines.py), a deterministic, instant stand-in with no model that recognises the phrases
below wherever their exact samples lie whole in a segment: their word checks still prove that each
stream's own audio came through whole and in order. Real Whisper (`shared_server`, `start_server`)
stays where recognition is the point: the engine's name and model as the server reports them,
partial and final words of a live stream, resampled audio, hotwords and languages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import urllib.request

import numpy as np
import pytest
import websockets

from tests.conftest import make_config
from tests.engines import KnownPhrasesEngine, RecordingEngine
from tests.server_thread import ServerThread
from tests.speech import compose, to_pcm16
from tests.wsclient import (
    START,
    connect,
    final_words,
    finals,
    recv,
    send_audio,
    start,
    transcribe,
    until,
    until_end,
    words,
)


@pytest.fixture(scope="module")
def phrases():
    return {
        "hello": compose([0.4, "hello world", 0.6]),
        "fox": compose([0.4, "the quick brown fox jumps over the lazy dog", 0.6]),
        "morning": compose([0.4, "good morning everyone", 0.6]),
        "door": compose([0.4, "please open the door", 0.6]),
    }


# Every phrase the stand-in's servers hear (tests.speech.compose's default voice and rate).
KNOWN_PHRASES = [
    "hello world",
    "the quick brown fox jumps over the lazy dog",
    "good morning everyone",
    "please open the door",
    "the quick brown fox jumps",
    "over the lazy dog",
    "good morning",
]


@pytest.fixture(scope="module")
def phrase_engine():
    return KnownPhrasesEngine(KNOWN_PHRASES)


@pytest.fixture(scope="module")
def stand_in_server(scorer, phrase_engine):
    """`shared_server` on the stand-in engine: default settings, for tests that need no words of a model."""
    server = ServerThread(make_config(), phrase_engine, scorer).start()
    yield server
    server.stop()


def test_the_stand_in_hears_only_whole_known_phrases_as_they_were_sent(phrase_engine):
    # What the stand-in's word checks below prove: a phrase is heard only when its samples arrived
    # whole and unchanged, and a segment's words are the phrases between its context and the end.
    script = compose([0.3, "the quick brown fox jumps", 0.1, "over the lazy dog", 0.5])
    sent = np.frombuffer(to_pcm16(script.audio), dtype="<i2").astype(np.float32) / 32768  # as a server holds it
    hear = phrase_engine.recognise
    (first, first_end), (second, second_end) = script.spans
    assert hear(sent) == "the quick brown fox jumps over the lazy dog"
    assert hear(np.delete(sent, np.s_[first + 1000 : first + 1160])) == "over the lazy dog"  # 10 ms lost
    doubled = np.concatenate([sent[:second_end], sent[second:]])
    assert hear(doubled) == "the quick brown fox jumps over the lazy dog over the lazy dog"
    assert hear(sent, context_samples=first_end) == "over the lazy dog"
    partial = hear(sent[: (second + second_end) // 2])  # a partial re-decode, half way through a phrase
    assert partial.startswith("the quick brown fox jumps over") and not partial.endswith("dog")
    assert hear(sent[: first + 1000]) == ""  # too little of a phrase for any word
    mixed = sent[: len(sent) // 2] + sent[len(sent) // 2 : len(sent) // 2 * 2]  # two halves over each other
    assert hear(mixed) == ""
    assert hear(compose([0.3, "bonjour tout le monde", 0.5], voice="fr").audio) == ""  # not a known phrase
    assert hear(np.random.default_rng(1).uniform(-0.5, 0.5, 16000).astype(np.float32)) == ""


def http_get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode()


@pytest.mark.parametrize("path", ["/", "/ws"])
async def test_handshake_on_root_and_ws_paths(shared_server, path):
    async with await connect(shared_server.url, path) as ws:
        assert ws.subprotocol == "binary"  # FunASR's clients ask for it
        ready = await start(ws, wav_name="hello")
        assert ready["wav_name"] == "hello" and ready["engine"] == "whisper" and ready["is_final"] is False
        await ws.send(json.dumps({"is_speaking": False}))
        end = await recv(ws)
        assert end["type"] == "end" and end["is_final"] is True and end["segments"] == []


async def test_healthz_and_status_page(shared_server):
    status, kind, body = http_get(shared_server.http + "/healthz")
    health = json.loads(body)
    assert status == 200 and "json" in kind
    assert health["engine"] == "whisper" and health["device"] == "cpu" and "whisper-base" in health["model"]
    assert health["connections"] == 0 and health["queue_depth"] == 0
    async with await connect(shared_server.url) as ws:
        await start(ws)
        assert json.loads(http_get(shared_server.http + "/healthz")[2])["connections"] == 1
    status, kind, body = http_get(shared_server.http + "/status")
    assert status == 200 and "text/html" in kind and "/healthz" in body


async def test_partials_precede_their_final_and_end_comes_last(start_server, phrases, phrase_engine):
    # On the stand-in (instant): with Whisper, a machine loaded by the other test worker once
    # decoded the first partial so slowly that it was the only one ("Vick."), before the final.
    # long_segment_s 0: this 3.2 s phrase would close at its end's first 150 ms, as "pause".
    server = start_server(engine=phrase_engine, inference={"partial_interval_ms": 400}, whisper={"long_segment_s": 0.0})
    replies = await transcribe(server.url, phrases["fox"].audio, realtime=True)
    kinds = [r["type"] for r in replies]
    assert kinds[-1] == "end" and kinds.count("final") == 1
    final_at = kinds.index("final")
    partials = [r for r in replies if r["type"] == "partial"]
    assert partials and all(kinds.index("partial") < final_at for _ in partials)
    assert all(r["segment_id"] == 0 and r["mode"] == "2pass-online" for r in partials)
    assert "fox" in words(" ".join(p["stable"] + " " + p["unstable"] for p in partials))
    final = replies[final_at]
    assert final["mode"] == "2pass-offline" and final["end_reason"] == "silence"
    assert words(final["final_text"]) == "the quick brown fox jumps over the lazy dog", final["final_text"]
    span = phrases["fox"].spans[0]
    assert abs(final["start_ms"] - span[0] / 16) <= 100 and abs(final["end_ms"] - span[1] / 16) <= 100


async def test_end_of_stream_flushes_the_open_segment(stand_in_server):
    speech = compose([0.3, "good morning everyone"])  # no trailing silence: still speaking at the end
    replies = await transcribe(stand_in_server.url, speech.audio)
    (final,) = finals(replies)
    assert final["end_reason"] == "end_of_stream"
    assert words(final["final_text"]) == "good morning everyone"
    assert replies[-1]["type"] == "end" and replies[-1]["segments"][0]["final_text"] == final["final_text"]


async def test_concurrent_clients_each_get_their_own_words(stand_in_server, phrases):
    names = ["hello", "morning", "door"]
    results = await asyncio.gather(*[transcribe(stand_in_server.url, phrases[n].audio, wav_name=n) for n in names])
    got = [final_words(r) for r in results]
    assert got == ["hello world", "good morning everyone", "please open the door"]
    assert all(r[-1]["wav_name"] == n for r, n in zip(results, names))


async def test_offline_mode_answers_once_with_the_whole_transcript(stand_in_server):
    script = compose([0.3, "hello world", 0.8, "good morning everyone", 0.5])
    replies = await transcribe(stand_in_server.url, script.audio, mode="offline")
    assert [r["type"] for r in replies] == ["end"]
    assert replies[0]["mode"] == "offline" and replies[0]["is_final"] is True
    assert words(replies[0]["text"]) == "hello world good morning everyone"
    assert len(replies[0]["segments"]) == 2


async def test_online_mode_text_is_append_only(start_stand_in, phrases):
    server = start_stand_in(inference={"partial_interval_ms": 300})
    replies = await transcribe(server.url, phrases["fox"].audio, realtime=True, mode="online")
    assert {r["mode"] for r in replies} == {"online"}
    appended = "".join(r["text"] for r in replies)
    assert words(appended).endswith("lazy dog")
    assert "fox" in words(appended)


# Known rare failure (once in session 8, on a loaded machine; passed alone): "god bless everyone".
# Likely cause (not proven): resampled through 8 kHz the phrase decodes near Whisper's
# log-probability guard, whose fallback samples at a higher temperature, so words can vary.
@pytest.mark.flaky(reruns=1)
async def test_resampled_48k_and_8k_streams(shared_server, phrases):
    # The server resamples what the client declares (audio_fs): the phrase keeps its place and length
    # on the stream's clock, and is recognised. Telephone-band espeak is fragile for Whisper base (a
    # fresh-clone CI run heard "god bless everyone" for "good morning everyone" at 8 kHz; its int8
    # decodes differ between processes), so a nine-word phrase may have a few slips ("round fox
    # jumped" at 8 kHz here); a stream resampled wrongly (half or double speed) fails both checks.
    import soxr

    from tests.wer import word_error_rate

    spoken = phrases["fox"]
    span = spoken.spans[0]
    for rate in (48000, 8000):
        audio = soxr.resample(spoken.audio, 16000, rate).astype(np.float32)
        (final,) = finals(await transcribe(shared_server.url, audio, rate=rate))
        assert abs(final["start_ms"] - span[0] / 16) <= 100 and abs(final["end_ms"] - span[1] / 16) <= 100, final
        assert word_error_rate(spoken.texts[0], final["final_text"]) <= 1 / 3, (rate, final["final_text"])


# --- bad input ------------------------------------------------------------------------------------


async def expect_error(ws, code: str) -> dict:
    reply = await recv(ws, 10)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["message"] and reply["text"] == "" and reply["is_final"] is False
    return reply


@pytest.mark.parametrize(
    "bad, code",
    [
        ("{not json", "bad_json"),
        (json.dumps({"mode": "realtime"}), "bad_mode"),
        (json.dumps({"mode": "2pass", "audio_fs": "fast"}), "bad_sample_rate"),
        (json.dumps({"mode": "2pass", "silence_ms": -300}), "bad_setting"),
        (json.dumps({"mode": "2pass", "max_segment_s": 10**9}), "bad_setting"),
        (json.dumps({"mode": "2pass", "hotwords": {"x": "y"}}), "bad_hotwords"),
    ],
)
async def test_bad_first_message_gets_error_and_a_good_one_still_works(stand_in_server, phrases, bad, code):
    async with await connect(stand_in_server.url) as ws:
        await ws.send(bad)
        await expect_error(ws, code)
        await start(ws)
        await send_audio(ws, phrases["hello"].audio)
        await ws.send(json.dumps({"is_speaking": False}))
        assert final_words(await until_end(ws)) == "hello world"


async def test_audio_before_first_message_is_refused_clearly(stand_in_server):
    async with await connect(stand_in_server.url) as ws:
        await ws.send(b"\x00\x00" * 1600)
        error = await expect_error(ws, "no_stream")
        assert "before the JSON message" in error["message"]


@pytest.mark.parametrize("kind", ["bad_json", "odd_bytes", "frame_too_large", "reconfigure"])
async def test_bad_input_mid_stream_loses_nothing_already_heard(stand_in_server, kind):
    script = compose([0.3, "the quick brown fox jumps", 0.1, "over the lazy dog", 0.5])
    half = script.spans[0][1] // 160 * 160  # between the two phrases of one segment
    async with await connect(stand_in_server.url) as ws:
        await start(ws)
        await send_audio(ws, script.audio[:half])
        if kind == "bad_json":
            await ws.send("{oops")
        elif kind == "odd_bytes":
            await ws.send(b"\x01\x02\x03")
        elif kind == "frame_too_large":
            await ws.send(b"\x00\x00" * (1024 * 1024))  # 2 MiB, limit is 1 MiB
        else:
            await ws.send(json.dumps({"mode": "offline"}))
        code = {"odd_bytes": "bad_audio", "reconfigure": "already_started"}.get(kind, kind)
        await expect_error(ws, code)
        await send_audio(ws, script.audio[half:])
        await ws.send(json.dumps({"is_speaking": False}))
        heard = final_words(await until_end(ws))
    assert heard.startswith("the quick brown fox") and heard.endswith("lazy dog")


async def test_binary_garbage_is_treated_as_noise_and_the_stream_still_ends(stand_in_server):
    rng = np.random.default_rng(1)
    async with await connect(stand_in_server.url) as ws:
        await start(ws)
        for _ in range(20):
            await ws.send(rng.integers(0, 256, 3200, dtype=np.uint8).tobytes())
        await ws.send(json.dumps({"is_speaking": False}))
        replies = await until_end(ws)
    assert replies[-1]["type"] == "end"
    assert json.loads(http_get(stand_in_server.http + "/healthz")[2])["status"] == "ok"


async def test_endless_bad_input_is_closed_with_policy_violation(start_stand_in):
    server = start_stand_in(server={"max_errors_per_connection": 5})
    async with await connect(server.url) as ws:
        for _ in range(5):
            await ws.send("nope")
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await recv(ws, 10)
        assert ws.close_code == 1008


async def test_gigantic_frame_closes_only_that_connection(stand_in_server, phrases):
    async def abuser():
        async with await connect(stand_in_server.url) as ws:
            await start(ws)
            with pytest.raises(websockets.ConnectionClosed):
                await ws.send(os.urandom(8 * 1024 * 1024))  # beyond 4x max_frame_bytes: not even read
                while True:
                    await recv(ws, 10)
            return ws.close_code

    code, polite = await asyncio.gather(abuser(), transcribe(stand_in_server.url, phrases["door"].audio, realtime=True))
    assert code == 1009
    assert final_words(polite) == "please open the door"


async def test_abrupt_disconnect_mid_segment_is_still_finalized_and_logged(stand_in_server, caplog):
    caplog.set_level(logging.INFO, logger="server.connection")
    speech = compose([0.3, "please open the door"])
    ws = await connect(stand_in_server.url)
    await start(ws, wav_name="vanishing")
    await send_audio(ws, speech.audio)
    await asyncio.sleep(0.3)
    ws.transport.abort()  # no close frame: the client just vanishes mid-segment
    for _ in range(300):
        if "client gone" in caplog.text:
            break
        await asyncio.sleep(0.1)
    line = next(r.getMessage() for r in caplog.records if "client gone" in r.getMessage())
    assert "'vanishing'" in line and words(line).endswith("please open the door")


async def test_misbehaving_clients_do_not_disturb_a_live_stream(stand_in_server, phrases):
    async def vandal():
        for _ in range(3):
            ws = await connect(stand_in_server.url)
            await ws.send("{{{")
            await ws.send(b"\x01")
            await ws.send(json.dumps(START))
            await ws.send(b"\x01\x02\x03")
            await send_audio(ws, phrases["hello"].audio[:8000])
            ws.transport.abort()
            await asyncio.sleep(0.2)

    good, _ = await asyncio.gather(transcribe(stand_in_server.url, phrases["fox"].audio, realtime=True), vandal())
    assert "quick brown fox" in final_words(good)


async def test_model_failure_reaches_the_client_and_nothing_hangs(start_stand_in, phrase_engine, phrases):
    engine = RecordingEngine(phrase_engine, fail=lambda audios: True)
    server = start_stand_in(engine=engine)
    replies = await transcribe(server.url, phrases["hello"].audio)
    errors = [r for r in replies if r["type"] == "error"]
    (final,) = finals(replies)
    assert errors and errors[0]["code"] == "decode_failed" and "injected model failure" in errors[0]["message"]
    assert final["final_text"] == "" and "injected model failure" in final["error"]
    assert replies[-1]["type"] == "end"


async def test_full_server_refuses_with_try_again_later(start_stand_in):
    server = start_stand_in(server={"max_connections": 1})
    async with await connect(server.url) as first:
        await start(first)
        second = await connect(server.url)
        busy = await recv(second, 10)
        assert busy["type"] == "error" and busy["code"] == "busy" and "try again later" in busy["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await recv(second, 10)
        assert second.close_code == 1013


async def test_shutdown_finalizes_open_segments_before_closing(start_stand_in):
    server = start_stand_in()
    speech = compose([0.3, "good morning everyone"])
    async with await connect(server.url) as ws:
        await start(ws)
        await send_audio(ws, speech.audio)
        await asyncio.sleep(0.3)
        stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
        replies = await until_end(ws)
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws, 10)
        await stopper
    assert final_words(replies) == "good morning everyone"
    assert ws.close_code == 1001


async def test_tls_serves_wss(start_stand_in, tmp_path, phrases):
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    server = start_stand_in(server={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # as FunASR's client does
    url = f"wss://127.0.0.1:{server.server.port}"
    async with websockets.connect(url, subprotocols=["binary"], ssl=context, ping_interval=None) as ws:
        await start(ws)
        await send_audio(ws, phrases["hello"].audio)
        await ws.send(json.dumps({"is_speaking": False}))
        assert final_words(await until_end(ws)) == "hello world"


async def test_hotwords_and_language_reach_the_engine_per_connection(shared_server, no_temperature_fallback):
    english = compose([0.3, "we use pytorch and numpy", 0.5]).audio
    # French speech: told it is French, Whisper writes French words; told English, it does not.
    # (English speech under <|fr|> was on the edge between transcribing and translating.) Which
    # French words varies: espeak's French is poor, and once, under a loaded -n 4 run, the French
    # decode came back "Pouf tout mort" (its rerun in the same process too); the English one is
    # "Oh, too much".
    french = compose([0.3, "bonjour tout le monde", 0.5], voice="fr").audio
    plain, hinted, as_french, as_english = await asyncio.gather(
        transcribe(shared_server.url, english),
        transcribe(shared_server.url, english, hotwords=json.dumps({"PyTorch": 20, "NumPy": 30}), language="en"),
        transcribe(shared_server.url, french, language="fr"),
        transcribe(shared_server.url, french, language="en"),
    )
    assert "pytorch" not in final_words(plain)
    assert "pytorch" in final_words(hinted)
    french_words = {"bonjour", "tout", "monde"}
    assert french_words & set(final_words(as_french).split()), final_words(as_french)
    assert not french_words & set(final_words(as_english).split()), final_words(as_english)


async def test_metrics_and_default_vad_worker_process(phrase_engine, phrases):
    server = ServerThread(make_config(), phrase_engine, None).start()  # default: FSMN in a worker process
    try:
        replies = await transcribe(server.url, phrases["hello"].audio)
        assert final_words(replies) == "hello world"
        status, kind, body = http_get(server.http + "/metrics")
        assert status == 200 and "text/plain" in kind
        assert 'caption_segments_total{reason="silence"} 1.0' in body
        assert "caption_audio_seconds_total" in body and 'caption_batch_size_count{kind="vad"}' in body
        assert 'caption_stage_seconds_count{stage="decode"}' in body
        health = json.loads(http_get(server.http + "/healthz")[2])
        assert health["status"] == "ok" and health["overloaded"] is False
    finally:
        server.stop()


async def test_overloaded_server_says_degraded_and_sheds_partials_first(start_stand_in, phrase_engine, phrases):
    engine = RecordingEngine(phrase_engine)
    # One request per model call: with the model stalled on the first final, the second must queue
    # (with larger batches both could ride in the stalled call, leaving nothing waiting).
    server = start_stand_in(
        engine=engine, inference={"overload_backlog_ms": 10, "partial_interval_ms": 300, "max_batch_size": 1}
    )
    engine.gate.clear()  # the model stalls: finals pile up
    async with await connect(server.url) as ws:
        await start(ws)
        await send_audio(ws, compose([0.3, "hello world", 0.6, "good morning", 0.6]).audio)

        def degraded() -> bool:
            health = json.loads(http_get(server.http + "/healthz")[2])
            return health["status"] == "degraded" and health["overloaded"] and health["backlog_ms"] >= 10

        # Once the VAD has closed both segments (a fixed 0.5 s was once too short on a loaded machine).
        await until(degraded, timeout=30)
        await send_audio(ws, phrases["fox"].audio, realtime=True)  # speech while degraded
        engine.gate.set()
        await ws.send(json.dumps({"is_speaking": False}))
        replies = await until_end(ws)
    assert len(finals(replies)) == 3  # finals keep flowing
    metrics = http_get(server.http + "/metrics")[2]
    skipped = float(re.search(r"^caption_partials_skipped_total (\S+)$", metrics, re.M).group(1))
    assert skipped >= 1


async def test_client_that_stops_reading_is_disconnected_and_others_carry_on(start_stand_in, phrases):
    import socket

    server = start_stand_in(server={"send_timeout_s": 1.0, "max_errors_per_connection": 1_000_000})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a tiny TCP window
    sock.connect(("127.0.0.1", server.server.port))
    stalled = await websockets.connect(
        server.url, sock=sock, subprotocols=["binary"], ping_interval=None, max_queue=1
    )  # max_queue=1: the client library stops reading from the socket, like a frozen client

    async def flood():
        try:
            for _ in range(20000):  # each bad message earns a ~250-byte error reply nobody reads
                await stalled.send("{bad")
        except websockets.ConnectionClosed:
            pass

    flooding = asyncio.create_task(flood())
    good = await transcribe(server.url, phrases["door"].audio, realtime=True)
    assert final_words(good) == "please open the door"
    for _ in range(100):
        metrics = http_get(server.http + "/metrics")[2]
        if 'caption_disconnects_total{reason="slow_reader"} 1.0' in metrics:
            break
        await asyncio.sleep(0.1)
    assert 'caption_disconnects_total{reason="slow_reader"} 1.0' in metrics
    flooding.cancel()
    await asyncio.gather(flooding, return_exceptions=True)
    stalled.transport.abort()


async def test_frozen_client_costs_bounded_server_memory(start_stand_in, phrases):
    # send_timeout_s is long, so only the queue bound can stop the growth: a frozen client's replies
    # must never pile up past max_queued_replies however much it sends.
    import socket

    bound = 40
    server = start_stand_in(
        server={"send_timeout_s": 60.0, "max_queued_replies": bound, "max_errors_per_connection": 1_000_000}
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.server.port))
    stalled = await websockets.connect(server.url, sock=sock, subprotocols=["binary"], ping_interval=None, max_queue=1)
    queued = []

    async def flood():
        try:
            for i in range(40000):
                await stalled.send("{bad")
                if i % 500 == 0:
                    await asyncio.sleep(0)
        except websockets.ConnectionClosed:
            pass

    async def sample():
        while True:
            metrics = http_get(server.http + "/metrics")[2]
            queued.append(float(re.search(r"^caption_queued_replies (\S+)$", metrics, re.M).group(1)))
            if 'caption_disconnects_total{reason="slow_reader"} 1.0' in metrics:
                return
            await asyncio.sleep(0.05)

    flooding = asyncio.create_task(flood())
    await asyncio.wait_for(sample(), 60)  # until the server drops the frozen client
    good = await transcribe(server.url, phrases["door"].audio)
    assert final_words(good) == "please open the door"
    assert max(queued) <= bound + 1, f"replies queued for a frozen client grew to {max(queued)}"
    flooding.cancel()
    await asyncio.gather(flooding, return_exceptions=True)
    stalled.transport.abort()


async def test_gpu_cache_clear_endpoint_answers_clearly_on_cpu(shared_server):
    request = urllib.request.Request(shared_server.http + "/admin/gpu/clear-cache", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        report = json.loads(response.read())
    assert report == {
        "engines": [
            {
                "engine": "whisper",
                "runtime": "CTranslate2",
                "device": "cpu",
                "cleared": False,
                "message": "device is cpu: no CUDA cache to clear",
            }
        ]
    }
    async with await connect(shared_server.url) as ws:  # the server carries on
        await start(ws)


async def test_finals_say_how_long_endpointing_took_in_real_time(stand_in_server):
    # Sent in real time, the 300 ms of silence after "hello world" takes 300 ms to arrive, so the
    # close comes at least that long after the last speech was heard, and not much later.
    script = compose([0.3, "hello world", 1.0])
    async with await connect(stand_in_server.url) as ws:
        await start(ws)
        await send_audio(ws, script.audio, realtime=True)
        await ws.send(json.dumps({"is_speaking": False}))
        replies = await until_end(ws)
    (final,) = finals(replies)
    assert final["end_reason"] == "silence"
    assert 250 <= final["endpoint_ms"] <= 700, final
    metrics = http_get(stand_in_server.http + "/metrics")[2]
    count = float(re.search(r'^caption_stage_seconds_count\{stage="endpoint"\} (\S+)$', metrics, re.M).group(1))
    assert count >= 1


async def test_speech_detection_far_behind_turns_new_connections_away_and_loses_nothing(phrase_engine, scorer):
    # More streams than the machine can score: the ones already open keep going (their audio waits
    # for VAD, nothing is dropped), /healthz says so, and newcomers get a clear "busy" instead of
    # making every stream's captions late.
    import threading

    class StalledScorer:  # the real FSMN scorer, held back while the gate is closed
        def __init__(self):
            self.gate = threading.Event()

        def new_state(self):
            return scorer.new_state()

        def score(self, work):
            self.gate.wait(30)
            return scorer.score(work)

    stalled = StalledScorer()
    server = ServerThread(make_config(inference={"vad_overload_ms": 300}), phrase_engine, stalled).start()
    try:
        async with await connect(server.url) as ws:
            await start(ws)
            await send_audio(ws, compose([0.3, "good morning everyone", 0.6]).audio, realtime=True)  # live
            health = json.loads(http_get(server.http + "/healthz")[2])
            assert health["status"] == "degraded" and health["vad_behind"] and health["vad_backlog_ms"] >= 300
            async with await connect(server.url) as newcomer:
                busy = await recv(newcomer, 10)
                assert busy["code"] == "busy" and "speech detection is" in busy["message"]
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await newcomer.recv()
                assert closed.value.rcvd.code == 1013
            stalled.gate.set()
            await ws.send(json.dumps({"is_speaking": False}))
            replies = await until_end(ws)
        assert final_words(replies) == "good morning everyone"
        health = json.loads(http_get(server.http + "/healthz")[2])
        assert health["status"] == "ok" and not health["vad_behind"]
        assert final_words(await transcribe(server.url, compose([0.3, "hello world", 0.5]).audio)) == "hello world"
        stalled.gate.clear()  # a file pushed at full speed waits too, but only on itself: no alarm
        async with await connect(server.url) as ws:
            await start(ws)
            await send_audio(ws, compose([0.3, "good morning everyone", 0.6]).audio)
            await asyncio.sleep(0.5)
            health = json.loads(http_get(server.http + "/healthz")[2])
            assert health["status"] == "ok" and not health["vad_behind"]
            stalled.gate.set()
            await ws.send(json.dumps({"is_speaking": False}))
            assert final_words(await until_end(ws)) == "good morning everyone"
    finally:
        stalled.gate.set()
        server.stop()

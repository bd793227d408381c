"""Property-based fuzzing: the protocol parser never fails except with ProtocolError, and the
server answers hostile message sequences with a clear error or close code while a well-behaved
client on the same server keeps getting correct captions.

The server decodes with KnownPhrasesEngine (tests/engines.py), a stand-in with no model that hears
only GOOD_PHRASE, where its exact samples lie whole in a segment: the good client's words show that
its audio came through whole beside the hostile sequences; the test is not about recognition."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server import protocol
from server.protocol import EndStream, KeepGoing, Limits, ProtocolError, StartStream
from tests.engines import KnownPhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose
from tests.wsclient import START, final_words, transcribe

LIMITS = Limits(30.0)
FIELDS = [
    "mode", "wav_name", "wav_format", "audio_fs", "chunk_size", "chunk_interval", "hotwords", "itn",
    "is_speaking", "language", "silence_ms", "max_segment_s", "partial_interval_ms", "session_id", "resume_after",
]  # fmt: skip

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=300),
    st.sampled_from(["2pass", "online", "offline", "pcm", "16000", "5,10,5", '{"词": 20}', "NaN", "\x00"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
hostile_object = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20), json_value, max_size=8)


GOOD_PHRASE = "good morning everyone"  # what the well-behaved client says, again and again


@pytest.fixture
def start_stand_in(scorer):
    """conftest's start_server on the stand-in: start(**config_sections), stopped after the test."""
    with servers_on(KnownPhrasesEngine([GOOD_PHRASE]), scorer) as start:
        yield start


def dump(value) -> str:
    return json.dumps(value, allow_nan=True)  # NaN/Infinity literals: Python's parser accepts them


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(hostile_object.map(dump), json_value.map(dump), st.text(max_size=500)),
    stream_open=st.booleans(),
)
def test_parser_accepts_or_raises_protocol_error_only(text, stream_open):
    try:
        parsed = protocol.parse_text(text, LIMITS, stream_open)
    except ProtocolError as exc:
        assert exc.code and exc.message and len(exc.message) < 2000
        return
    assert isinstance(parsed, (StartStream, EndStream, KeepGoing))
    if isinstance(parsed, StartStream):
        assert protocol.MIN_SAMPLE_RATE_HZ <= parsed.audio_fs <= protocol.MAX_SAMPLE_RATE_HZ
        assert parsed.mode in protocol.MODES
        for value in (parsed.max_segment_s, parsed.silence_ms, parsed.partial_interval_ms):
            assert value is None or math.isfinite(value)
        json.dumps(protocol.ready(parsed, "e", "m"), allow_nan=False)  # replies are always valid JSON


# --- over loopback ---------------------------------------------------------------------------

frame = st.one_of(
    hostile_object.map(lambda o: ("text", dump(o))),
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.binary(max_size=700).map(lambda b: ("binary", b)),
    st.just(("text", json.dumps(START))),
    st.just(("text", json.dumps({"is_speaking": False}))),
    st.just(("text", "x" * 70_000)),  # a huge string
    st.just(("binary", b"\x00" * 3)),  # odd byte count
)
sequences = st.lists(frame, min_size=1, max_size=8)


async def play(url: str, sequence) -> str:
    """Send one hostile sequence; return how the server dealt with it (never silence or a crash)."""
    async with websockets.connect(url, ping_interval=None, max_size=None, open_timeout=20) as ws:
        try:
            for _kind, payload in sequence:
                await ws.send(payload)
            await ws.send(json.dumps({"is_speaking": False}))
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert isinstance(reply.get("text"), str) and "is_final" in reply
                if reply.get("type") == "error":
                    assert reply["code"] and reply["message"]
                if reply.get("is_final"):
                    return "end"
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            assert code in (1008, 1009, 1013), f"unexpected close {code}"
            return f"closed {code}"


@pytest.mark.slow
async def test_1000_hostile_sequences_while_a_good_client_keeps_getting_captions(start_stand_in):
    server = start_stand_in(server={"max_connections": 64, "max_errors_per_connection": 5})
    collected = []

    @settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(sequences)
    def sample(sequence):
        collected.append(sequence)

    sample()
    assert len(collected) >= 1000
    phrase = compose([0.3, GOOD_PHRASE, 0.6]).audio
    good_results = []

    async def good_client():
        while len(good_results) < 3 or not hostile_done.is_set():
            replies = await transcribe(server.url, phrase, realtime=True)
            good_results.append(final_words(replies))

    hostile_done = asyncio.Event()

    async def hostile():
        outcomes = []
        for start in range(0, len(collected), 8):  # 8 hostile connections at a time
            outcomes += await asyncio.gather(*(play(server.url, s) for s in collected[start : start + 8]))
        hostile_done.set()
        return outcomes

    outcomes, _ = await asyncio.gather(hostile(), good_client())
    assert len(outcomes) == len(collected)
    # The sequences exercised both ways out: a clean end after errors, and a policy close.
    assert {"end", "closed 1008"} <= set(outcomes), set(outcomes)
    assert good_results and all(text == "good morning everyone" for text in good_results)

"""Parsing and validation of client messages; shapes of replies FunASR's clients depend on."""

import json

import pytest

from server import protocol
from server.protocol import EndStream, KeepGoing, Limits, ProtocolError, StartStream

LIMITS = Limits(30.0)


def parse(message, stream_open=False):
    text = message if isinstance(message, str) else json.dumps(message)
    return protocol.parse_text(text, LIMITS, stream_open)


def test_funasr_client_first_message_is_accepted():
    start = parse(
        {
            "mode": "2pass",
            "chunk_size": [5, 10, 5],
            "chunk_interval": 10,
            "encoder_chunk_look_back": 4,
            "decoder_chunk_look_back": 0,
            "audio_fs": 16000,
            "wav_name": "demo",
            "wav_format": "pcm",
            "is_speaking": True,
            "hotwords": json.dumps({"阿里巴巴": 20, "hello world": 40}),
            "itn": True,
        }
    )
    assert isinstance(start, StartStream)
    assert start.mode == "2pass" and start.wav_name == "demo" and start.chunk_size == (5, 10, 5)
    assert start.hotwords == (("阿里巴巴", 20), ("hello world", 40))


def test_string_chunk_size_and_plain_hotword_lists():
    start = parse({"mode": "online", "chunk_size": "5,10,5", "hotwords": "alpha, beta gamma"})
    assert start.chunk_size == (5, 10, 5)
    assert [w for w, _ in start.hotwords] == ["alpha", "beta", "gamma"]


def test_null_settings_mean_unset():
    # A client that writes null for a setting gets its default, never a None where a number belongs.
    start = parse({"mode": "2pass", "chunk_interval": None, "silence_ms": None, "max_segment_s": None})
    assert isinstance(start, StartStream)
    assert start.chunk_interval == protocol.DEFAULT_CHUNK_INTERVAL == 10
    assert start.silence_ms is None and start.max_segment_s is None  # (the server's settings apply)
    assert parse({"mode": "2pass", "chunk_interval": 20}).chunk_interval == 20


def test_end_and_keepalive_messages():
    assert isinstance(parse({"is_speaking": False}, stream_open=True), EndStream)
    assert isinstance(parse({"is_speaking": False, "is_end": True}, stream_open=True), EndStream)
    assert isinstance(parse({"is_speaking": True}, stream_open=True), KeepGoing)


@pytest.mark.parametrize(
    "message, code, fragment",
    [
        ("{not json", "bad_json", "not valid JSON"),
        ("[1, 2]", "bad_json", "JSON object"),
        ({"mode": "realtime"}, "bad_mode", "mode must be one of offline, online, 2pass"),
        ({"mode": "2pass", "audio_fs": 4000}, "bad_sample_rate", "audio_fs must be an integer 8000..192000"),
        ({"mode": "2pass", "audio_fs": 200_000}, "bad_sample_rate", "audio_fs must be an integer 8000..192000"),
        ({"mode": "2pass", "audio_fs": "16000"}, "bad_sample_rate", "audio_fs"),
        ({"mode": "2pass", "wav_format": "../x"}, "bad_format", "wav_format must be 'pcm' or a file format"),
        ({"mode": "2pass", "wav_format": 3}, "bad_format", "wav_format"),
        ({"mode": "2pass", "chunk_size": [5, -1, 5]}, "bad_setting", "chunk_size"),
        ({"mode": "2pass", "chunk_interval": 0}, "bad_setting", "chunk_interval"),
        ({"mode": "2pass", "is_speaking": "maybe"}, "bad_setting", "is_speaking must be true or false"),
        ({"mode": "2pass", "silence_ms": -300}, "bad_setting", "silence_ms must be an integer 50..5000"),
        ({"mode": "2pass", "max_segment_s": 1e9}, "bad_setting", "max_segment_s must be a number 1..30"),
        ({"mode": "2pass", "max_segment_s": float("nan")}, "bad_setting", "max_segment_s"),
        ({"mode": "2pass", "partial_interval_ms": 5}, "bad_setting", "partial_interval_ms"),
        ({"mode": "2pass", "hotwords": '{"a": "heavy"}'}, "bad_hotwords", "weight"),
        ({"mode": "2pass", "hotwords": "{broken"}, "bad_hotwords", "not valid JSON"),
        ({"mode": "2pass", "language": "en; drop"}, "bad_setting", "language"),
        ({"mode": "2pass", "wav_name": 7}, "bad_setting", "wav_name"),
    ],
)
def test_bad_messages_get_a_code_and_a_clear_message(message, code, fragment):
    with pytest.raises(ProtocolError) as err:
        parse(message)
    assert err.value.code == code
    assert fragment in err.value.message


@pytest.mark.parametrize("rate", [8000, 11025, 24000, 32000, 44100, 96000, 192000])
def test_any_sample_rate_funasr_accepts_is_taken(rate):
    assert parse({"mode": "2pass", "audio_fs": rate}).audio_fs == rate


@pytest.mark.parametrize("fmt", ["mp3", "wav", "others", "M4A", "ogg"])
def test_a_file_format_other_than_pcm_marks_a_file_stream(fmt):
    start = parse({"mode": "offline", "wav_format": fmt})
    assert start.is_container and start.wav_format == fmt.lower()
    assert not parse({"mode": "offline", "wav_format": "PCM"}).is_container  # FunASR's HTML5 client


def test_hotword_weights_out_of_range_are_clamped_and_reported():
    start = parse({"mode": "2pass", "hotwords": '{"阿里巴巴": 500, "达摩院": 0, "魔搭": 30, "x": 20.0}'})
    assert dict(start.hotwords) == {"阿里巴巴": 100, "达摩院": 1, "魔搭": 30, "x": 20}
    assert len(start.warnings) == 2 and "阿里巴巴" in start.warnings[0] and "used 100" in start.warnings[0]


def test_the_end_message_ends_the_stream_whatever_else_it_carries():
    # FunASR's HTML5 client repeats its configuration in the end message
    html5_end = {
        "chunk_size": [5, 10, 5],
        "wav_name": "h5",
        "is_speaking": False,
        "chunk_interval": 10,
        "mode": "2pass",
    }
    assert isinstance(parse(html5_end, stream_open=True), EndStream)
    assert isinstance(parse({**html5_end, "mode": "offline", "audio_fs": 8000}, stream_open=True), EndStream)


def test_reconfiguring_an_open_stream_is_refused():
    with pytest.raises(ProtocolError) as err:
        parse({"mode": "offline"}, stream_open=True)
    assert err.value.code == "already_started"


def test_every_reply_carries_text_and_is_final():
    start = parse({"mode": "2pass"})
    replies = [
        protocol.ready(start, "whisper", "base"),
        protocol.error("bad_json", "x"),
        protocol.partial("2pass", "w", 0, 10, 20, "a", "a", "b"),
        protocol.final("2pass", "w", 0, 10, 20, "a b", "b", "silence", None),
        protocol.end("2pass", "w", []),
    ]
    for reply in replies:
        assert isinstance(reply["text"], str) and isinstance(reply["is_final"], bool)
    assert [r["is_final"] for r in replies] == [False, False, False, False, True]
    # every reply a FunASR client may see carries `mode` (funasr-client reads it from every reply);
    # `ready` is sent only to clients that ask for extra replies
    assert ["mode" in r for r in replies] == [False, True, True, True, True]


def test_funasr_clients_get_errors_as_objects_and_failures_in_the_text():
    error = protocol.for_funasr_client(protocol.error("bad_audio", "odd bytes", "w", "online"))
    assert error["error"] == {"code": "bad_audio", "message": "odd bytes"} and error["mode"] == "online"
    failed = protocol.for_funasr_client(protocol.end("offline", "w", [], "could not decode"))
    assert failed["text"] == "ERROR: could not decode" and failed["is_final"] is True and "error" not in failed
    final = protocol.final("2pass", "w", 0, 0, 1, "", "", "silence", None)
    final["error"] = "decoding failed: boom"
    assert "error" not in protocol.for_funasr_client(final)


def test_a_refusal_ends_funasr_clients_with_the_reason_in_the_text():
    refused = protocol.for_funasr_client(protocol.refusal("busy", "server busy"))
    assert refused["is_final"] is True and refused["is_end"] is True and refused["text"] == "ERROR: server busy"
    assert refused["error"] == {"code": "busy", "message": "server busy"} and refused["mode"]


def test_the_last_final_carries_the_end_for_funasr_clients():
    final = protocol.final("2pass", "w", 3, 0, 1, "ask not", "", "end_of_stream", None)
    last = protocol.last_final(final, protocol.end("2pass", "w", [final]))
    assert last["text"] == "ask not " and last["is_final"] is True and last["is_end"] is True
    assert last["mode"] == "2pass-offline" and last["segment_id"] == 3


def test_modes_map_to_funasr_reply_modes():
    assert protocol.partial("online", "w", 0, 0, 1, "", "", "")["mode"] == "online"
    assert protocol.partial("2pass", "w", 0, 0, 1, "", "", "")["mode"] == "2pass-online"
    # FunASR clients concatenate `text`; space-separated text gets a trailing space, CJK none
    assert protocol.final("2pass", "w", 0, 0, 1, "a b", "b", "silence", None)["text"] == "a b "
    assert protocol.final("2pass", "w", 0, 0, 1, "a b", "b", "silence", None)["final_text"] == "a b"
    assert protocol.final("online", "w", 0, 0, 1, "a b", "b", "silence", None)["text"] == "b "
    assert protocol.final("2pass", "w", 0, 0, 1, "你好", "", "silence", None)["text"] == "你好"
    seg = protocol.final("offline", "w", 0, 0, 1, "hello", "hello", "silence", ((0, 5),))
    end = protocol.end("offline", "w", [seg, protocol.final("offline", "w", 1, 2, 3, "world", "", "silence", None)])
    assert end["mode"] == "offline" and end["text"] == "hello world" and end["is_final"] is True
    assert json.loads(end["timestamp"]) == [[0, 5]]


def test_a_client_silence_shorter_than_the_long_segment_pause_caps_that_pause():
    # The server closes long segments at 150 ms pauses; a client asking for 100 ms of silence must
    # not get a stream whose "shorter" pause is longer than its silence (nor a refused stream).
    from server.stream_settings import session_settings
    from tests.conftest import make_config

    config = make_config(whisper={"long_segment_s": 3.0}, endpointing={"long_silence_ms": 150})
    quick = session_settings(config, parse({"mode": "2pass", "silence_ms": 100}), "whisper").endpoint
    assert (quick.silence_ms, quick.long_segment_s, quick.long_silence_ms) == (100, 3.0, 100)
    default = session_settings(config, parse({"mode": "2pass"}), "whisper").endpoint
    assert (default.silence_ms, default.long_silence_ms) == (300, 150)


def test_a_long_segment_closes_at_a_pause_only_for_an_engine_that_has_it_on():
    # Each engine has its own long_segment_s: on for Whisper (measured), off for FunASR models
    # until measured on real ones, and never for an engine that does not decode (VAD only).
    from server.stream_settings import session_settings
    from tests.conftest import make_config

    config = make_config(whisper={"long_segment_s": 3.0}, funasr={"long_segment_s": 0.0})
    start = parse({"mode": "2pass"})
    assert session_settings(config, start, "whisper").endpoint.long_segment_s == 3.0
    assert session_settings(config, start, "funasr").endpoint.long_segment_s == 0.0
    assert session_settings(config, start, "instant").endpoint.long_segment_s == 0.0
    on_funasr = make_config(funasr={"long_segment_s": 4.0})
    assert session_settings(on_funasr, start, "funasr").endpoint.long_segment_s == 4.0

"""FunASR's own client behaviour against our server, in each of its modes.

Real Whisper (`shared_server`) hears the MP3 files, which no stand-in hears honestly, and one
8 kHz stream with a hotword list: end-to-end runs of both clients on the real model. Where the
words only show that the client's own audio arrived whole and in order, a stand-in with no model
listens (tests/engines.py, tests/job_engines.py): `known_server` where the client sends the 16 kHz
PCM16 samples as written, `whole_server` where the server resamples or decodes a WAV file first."""

import pytest

from tests.conftest import make_config
from tests.engines import KnownPhrasesEngine
from tests.funasr_client import run_funasr_client, run_html5_client
from tests.job_engines import WholePhrasesEngine
from tests.server_thread import ServerThread
from tests.speech import compose, to_pcm16, write_wav
from tests.wsclient import words

SCRIPT = ["hello world", 0.8, "good morning everyone"]
PHRASES = ["hello world", "good morning everyone"]
# What the resampled and file tests send (before resampling): the phrases' spans of these scripts.
LONG = [0.3, *SCRIPT, 0.5]
SHORT = [0.3, "good morning everyone", 0.5]


@pytest.fixture(scope="module")
def pcm():
    return to_pcm16(compose([0.4, *SCRIPT, 0.6]).audio)


@pytest.fixture(scope="module")
def known_server(scorer):
    """One server on KnownPhrasesEngine: it finds the phrases sample for sample in the 16 kHz PCM16
    the clients send as written, so lost, doubled or reordered audio loses its words."""
    server = ServerThread(make_config(), KnownPhrasesEngine(PHRASES), scorer).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def whole_server(scorer):
    """One server on WholePhrasesEngine (correlation >= 0.99 with each whole phrase) for audio that
    the server resamples or decodes from a WAV file before anyone hears it. Measured through these
    tests: 0.99999 after 24, 32 and 44.1 kHz, 0.9993 after 8 kHz (espeak has little above 4 kHz),
    1.0 for a 16 kHz WAV. MP3 gave 0.991 at 90% of the phrases' energy, at the bars or past them."""
    server = ServerThread(make_config(), WholePhrasesEngine.of(compose(LONG), compose(SHORT)), scorer).start()
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["offline", "2pass", "online"])
async def test_funasr_client_prints_the_transcript_and_gets_its_acknowledgement(known_server, pcm, mode):
    result = await run_funasr_client(known_server.url, pcm, mode, send_without_sleep=mode != "online")
    ack = result.acknowledgement
    assert ack["is_final"] is True and "error" not in ack
    printed = words(result.text_print)
    if mode == "online":  # append-only deltas: everything ends up printed, in order
        assert printed.endswith("good morning everyone") and printed.startswith("hello world")
    else:
        assert printed == "hello world good morning everyone"
    if mode == "2pass":
        assert words(result.offline_text) == printed
    assert all(isinstance(m["text"], str) for m in result.messages)


async def test_funasr_client_at_8k_with_hotword_list(shared_server):
    import numpy as np
    import soxr

    audio = soxr.resample(compose([0.3, "good morning everyone", 0.5]).audio, 16000, 8000).astype(np.float32)
    result = await run_funasr_client(
        shared_server.url, to_pcm16(audio), "2pass", sample_rate=8000, hotword="morning,everyone"
    )
    assert words(result.text_print) == "good morning everyone"


# --- FunASR's official Python client (runtime/python/websocket/funasr_wss_client.py), replayed ---


class OptionsRecorder:
    """An engine (here a stand-in: no words are read), keeping the decode options each call got (hotwords, itn)."""

    def __init__(self, inner):
        self.inner, self.name, self.model, self.device = inner, inner.name, inner.model, inner.device
        self.file_model = inner.file_model
        self.streaming = False  # no stream(): partials are re-decodes, whatever the inner engine has
        self.options = []

    def decode(self, audios, options):
        self.options.extend(options)  # one DecodeOptions per clip
        return self.inner.decode(audios, options)

    def language_problem(self, language):
        return self.inner.language_problem(language)

    def on_cpu(self):
        return self


@pytest.mark.parametrize(
    "hotword, expected",
    [
        ('{"PyTorch": 20, "NumPy": 30}', {"PyTorch": 20, "NumPy": 30}),  # its microphone path: file lines -> JSON
        ("PyTorch,NumPy", {"PyTorch": 20, "NumPy": 20}),  # its file path: first words, comma-joined
        ('{"PyTorch": 500, "NumPy": -3}', {"PyTorch": 100, "NumPy": 1}),  # weights clamped, not refused
    ],
)
async def test_official_client_hotwords_reach_the_engine(start_instant, pcm, hotword, expected):
    engine = OptionsRecorder(KnownPhrasesEngine(PHRASES))
    server = start_instant(engine=engine)
    result = await run_funasr_client(server.url, pcm, "2pass", hotword=hotword)
    assert result.acknowledgement["is_final"] is True
    finals = [o for o in engine.options if not o.partial]
    assert finals and all(dict(o.hotwords) == expected for o in finals)
    warnings = [m for m in result.messages if m.get("type") == "warning"]
    assert len(warnings) == (2 if "500" in hotword else 0) and all(w["mode"] == "2pass-online" for w in warnings)


async def test_official_client_use_itn_0_turns_itn_off(start_instant):
    from tests.engines import SpokenFormEngine

    server = start_instant(engine=SpokenFormEngine("twenty twenty five"))
    audio = to_pcm16(compose([0.3, "good morning everyone", 0.6]).audio)
    with_itn, without = [await run_funasr_client(server.url, audio, "offline", use_itn=flag) for flag in (True, False)]
    assert with_itn.text_print.strip() == "2025" and without.text_print.strip() == "twenty twenty five"


@pytest.mark.parametrize("mode", ["2pass", "online"])
async def test_official_client_with_an_unusual_chunk_size(known_server, pcm, mode):
    result = await run_funasr_client(known_server.url, pcm, mode, chunk_size=(8, 8, 4), chunk_interval=5)
    assert result.acknowledgement["is_final"] is True
    assert words(result.text_print).endswith("good morning everyone")


@pytest.mark.parametrize("rate", [8000, 24000, 32000, 44100])
async def test_official_client_at_sample_rates_funasr_takes(whole_server, rate):
    import numpy as np
    import soxr

    audio = soxr.resample(compose(SHORT).audio, 16000, rate).astype(np.float32)
    result = await run_funasr_client(whole_server.url, to_pcm16(audio), "2pass", sample_rate=rate)
    assert words(result.text_print) == "good morning everyone" and result.acknowledgement["is_final"] is True


async def test_official_client_sends_an_mp3_file_as_others(shared_server, tmp_path):
    import subprocess

    wav = write_wav(tmp_path / "phrase.wav", compose([0.3, "hello world", 0.8, "good morning everyone", 0.5]).audio)
    subprocess.run(["sox", str(wav), str(tmp_path / "phrase.mp3")], check=True)
    data = (tmp_path / "phrase.mp3").read_bytes()
    for mode in ("offline", "2pass"):
        result = await run_funasr_client(shared_server.url, data, mode, wav_format="others")
        assert result.acknowledgement["is_final"] is True
        assert words(result.text_print) == "hello world good morning everyone", mode


async def test_a_file_that_does_not_decode_ends_with_the_reason(known_server):
    result = await run_funasr_client(known_server.url, b"this is not audio at all" * 100, "offline", wav_format="mp3")
    ack = result.acknowledgement
    assert ack["is_final"] is True and ack["is_end"] is True and ack["text"].startswith("ERROR: could not decode")


async def test_a_refused_stream_says_why_at_its_end_without_an_error_storm(known_server, pcm):
    result = await run_funasr_client(known_server.url, pcm, "2pass", sample_rate=4000)
    ack = result.acknowledgement
    assert ack["is_final"] is True and ack["is_end"] is True
    assert ack["text"].startswith("ERROR: the stream was not started: audio_fs must be")
    errors = [m for m in result.messages if m.get("type") == "error"]
    # one for the refused start, one for the audio after it; then the audio is dropped quietly
    assert [e["code"] for e in errors] == ["bad_sample_rate", "no_stream"]
    assert all(e["mode"] and isinstance(e["error"], dict) for e in errors)


# --- FunASR's HTML5 client (runtime/html5/static), replayed ---


async def test_html5_microphone_2pass_end_message_with_its_configuration(known_server, pcm):
    result = await run_html5_client(known_server.url, pcm, "2pass", hotwords={"morning": 20}, close_after_s=60)
    assert words(result.shown) == "hello world good morning everyone"
    last = result.messages[-1]
    assert last["is_final"] is True and last["is_end"] is True and last["mode"] == "2pass-offline"


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_html5_file_upload_of_a_wav(whole_server, tmp_path, rate):
    import numpy as np
    import soxr

    audio = soxr.resample(compose(LONG).audio, 16000, rate)
    wav = write_wav(tmp_path / "upload.wav", audio.astype(np.float32), rate)
    result = await run_html5_client(whole_server.url, wav.read_bytes(), "2pass", file_ext="wav", file_sample_rate=rate)
    assert result.stopped_on_final and words(result.shown) == "hello world good morning everyone"
    assert [m["mode"] for m in result.messages] == ["offline"]


async def test_html5_file_upload_of_a_stereo_44k_wav_is_decoded_as_the_file_it_is(start_instant, tmp_path):
    """The page sends a WAV's bytes as "PCM" with the file's rate; a phone's stereo recording read
    as mono PCM16 would be noise. The header gives it away, and the server decodes the file.
    The stand-in knows the phrases at the loudness of the file's downmix, (L + R) / 2 (jobs/media.py):
    correlation 0.99999 at 100% of their energy, measured; read as PCM, or one channel, no words."""
    import dataclasses

    import numpy as np
    import soundfile
    import soxr

    script = compose(LONG)
    server = start_instant(engine=WholePhrasesEngine.of(dataclasses.replace(script, audio=script.audio * 0.9)))
    mono = soxr.resample(script.audio, 16000, 44100)
    path = tmp_path / "phone.wav"
    soundfile.write(path, np.stack([mono, mono * 0.8], axis=1), 44100, subtype="PCM_16")
    result = await run_html5_client(server.url, path.read_bytes(), "2pass", file_ext="wav", file_sample_rate=44100)
    assert result.stopped_on_final and words(result.shown) == "hello world good morning everyone"


async def test_html5_file_upload_of_an_mp3(shared_server, tmp_path):
    import subprocess

    wav = write_wav(tmp_path / "upload.wav", compose([0.3, "please open the door", 0.5]).audio)
    subprocess.run(["sox", str(wav), str(tmp_path / "upload.mp3")], check=True)
    result = await run_html5_client(shared_server.url, (tmp_path / "upload.mp3").read_bytes(), "2pass", file_ext="mp3")
    assert result.stopped_on_final and "open the door" in words(result.shown)


async def test_html5_client_from_another_origin_on_the_default_config(known_server, pcm):
    for origin in ("http://127.0.0.1:1337", "null"):  # its own small web server, or opened as a file
        result = await run_html5_client(known_server.url, pcm, "online", origin=origin, close_after_s=60)
        assert words(result.shown).endswith("good morning everyone"), origin

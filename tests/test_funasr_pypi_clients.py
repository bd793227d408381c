"""The FunASR client packages people install from PyPI, unchanged, against our default server.

funasr-client 0.1.6 and funasr-python 0.1.5 (tests/pypi_clients.py runs each in its own process) on
a real recording (../shared/audio/jfk.wav, three phrases with pauses), at 16, 24 and 8 kHz and as
an MP3, in every mode each supports. What each must return is what it returns from FunASR's own
servers: funasr-client merges the `2pass-offline` finals up to the first is_final reply;
funasr-python returns the text of the is_final reply (the stream's whole transcript in offline
mode, its last segment in 2pass and online) and reports every earlier reply as a partial.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from tests.pypi_clients import run_funasr_client, run_funasr_client_process, run_funasr_python_cli
from tests.wer import word_error_rate
from tests.wsclient import words

AUDIO = Path(__file__).resolve().parent.parent.parent / "shared" / "audio"
JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"


@pytest.fixture(scope="module")
def jfk_files(tmp_path_factory) -> dict[str, Path]:
    """jfk.wav as FunASR users have it: 16 kHz WAV, resampled WAVs, an MP3."""
    folder = tmp_path_factory.mktemp("jfk")
    source = AUDIO / "jfk.wav"
    audio, rate = soundfile.read(source, dtype="float32")
    files = {"16k": source}
    for name, target in (("24k", 24000), ("8k", 8000)):
        path = folder / f"jfk_{name}.wav"
        resampled = soxr.resample(audio, rate, target)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(target)
            out.writeframes((np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes())
        files[name] = path
    files["mp3"] = folder / "jfk.mp3"
    subprocess.run(["sox", str(source), str(files["mp3"])], check=True)
    return files


def _is_jfk_suffix(text: str) -> bool:
    return bool(words(text)) and JFK.endswith(words(text))


def _is_jfk(text: str) -> bool:
    """The whole speech, as Whisper base hears it: these tests are about the protocol, so a word
    or two of recognition error (issue 14's business) must not fail them; a lost segment must."""
    heard = words(text).split()
    return (
        word_error_rate(JFK, text) <= 2 / len(JFK.split()) and heard[:2] == ["and", "so"] and heard[-1:] == ["country"]
    )


@pytest.mark.parametrize("mode", ["2pass", "online", "offline"])
def test_funasr_python_cli_returns_the_transcript(shared_server, jfk_files, tmp_path, mode):
    result = run_funasr_python_cli(shared_server.url, jfk_files["16k"], mode, tmp_path / "out.json")
    assert "error" not in result, result
    partials = [p["text"] for p in result.get("partial_results", [])]
    if mode == "offline":  # one reply: the whole transcript
        assert _is_jfk(result["text"]), result["text"]
        assert not partials
    elif mode == "online":  # append-only deltas, then the last segment's rest: together, the transcript
        assert _is_jfk(" ".join([*partials, result["text"]]))
    else:  # the last segment's final text; the earlier finals came as (2pass-offline) non-final replies
        assert _is_jfk_suffix(result["text"]), result["text"]
        assert words(" ".join(partials)).startswith("and so my fellow americans")


@pytest.mark.parametrize("rate", ["16k", "24k", "8k"])
def test_funasr_client_merges_the_whole_transcript_at_any_sample_rate(shared_server, jfk_files, rate):
    result = run_funasr_client(shared_server.url, jfk_files[rate], "2pass")
    assert _is_jfk(result["merged"]["text"]), result["merged"]["text"]
    messages = result["messages"]
    assert all("mode" in m and "text" in m and "wav_name" in m for m in messages)
    assert messages[-1]["is_final"] is True and sum(m["is_final"] for m in messages) == 1
    assert not [m for m in messages if m.get("type") in ("ready", "warning")]  # FunASR has no such replies


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_funasr_client_streams_end_with_the_transcript_in_other_modes(shared_server, jfk_files, mode):
    messages = run_funasr_client(shared_server.url, jfk_files["16k"], mode)["messages"]
    assert messages[-1]["is_final"] is True
    if mode == "offline":
        assert [m["mode"] for m in messages] == ["offline"] and _is_jfk(messages[0]["text"])
    else:
        assert {m["mode"] for m in messages} == {"online"}
        assert _is_jfk(" ".join(m["text"] for m in messages))


def test_funasr_client_sends_an_mp3_and_gets_its_transcript(shared_server, jfk_files):
    # funasr-client sends a non-WAV file's bytes as they are, with wav_format "mp3"
    result = run_funasr_client(shared_server.url, jfk_files["mp3"], "2pass")
    assert _is_jfk(result["merged"]["text"]), result["merged"]["text"]
    offline = run_funasr_client(shared_server.url, jfk_files["mp3"], "offline")["messages"]
    assert len(offline) == 1 and offline[0]["is_final"] is True and _is_jfk(offline[0]["text"])


def test_funasr_client_hotwords_out_of_range_do_not_fail_the_stream(shared_server, jfk_files):
    result = run_funasr_client(shared_server.url, jfk_files["16k"], "2pass", hotwords={"Kennedy": 500})
    messages = result["messages"]
    assert messages[-1]["is_final"] is True and "country" in words(result["merged"]["text"])
    warning = next(m for m in messages if m.get("type") == "warning")
    assert "Kennedy" in warning["message"] and "used 100" in warning["message"] and warning["text"] == ""


async def test_funasr_client_turned_away_as_busy_ends_and_shows_why(start_server, jfk_files):
    """A full server says why and closes newcomers with 1013. funasr-client (which on close waits
    for an is_final reply with no time limit) must end, not hang, and say why."""
    import asyncio

    from tests.wsclient import connect, start

    server = start_server(server={"max_connections": 1})
    async with await connect(server.url) as holder:
        await start(holder)
        run = await asyncio.to_thread(run_funasr_client_process, server.url, jfk_files["16k"], "2pass")
    assert run.returncode != 0 and "1013" in run.stderr and "server busy" in run.stderr, run.stderr[-2000:]

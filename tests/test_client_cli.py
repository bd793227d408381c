"""The Python client CLI as a user runs it: a subprocess against a real server."""

import subprocess
import sys

import pytest

from client.srt import to_srt
from tests.engines import KnownPhrasesEngine
from tests.job_engines import WholePhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.wsclient import words


@pytest.fixture(scope="module")
def start_stand_in(scorer):
    """Servers on stand-ins with no model: the words here only show that the file's own audio came
    through whole and in order. A 16 kHz file is sent as the int16 samples it holds, so
    KnownPhrasesEngine finds its phrases sample for sample; a 44.1 kHz file is resampled to 16 kHz
    on the way, so its test gives WholePhrasesEngine (a phrase found at >= 0.99 correlation and its
    own loudness) to its server."""
    with servers_on(KnownPhrasesEngine(["hello world", "good morning everyone"]), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(start_stand_in):
    return start_stand_in()


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "client.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_file_to_lines_and_srt(shared_server, tmp_path):
    script = compose([0.4, "hello world", 0.8, "good morning everyone", 0.5])
    wav = write_wav(tmp_path / "talk.wav", script.audio)
    srt = tmp_path / "talk.srt"
    run = run_cli(str(wav), "--url", shared_server.url, "--fast", "--srt", str(srt))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 2 and words(lines[0]).endswith("hello world") and "good morning everyone" in words(lines[1])
    blocks = srt.read_text().strip().split("\n\n")
    assert len(blocks) == 2
    number, span, text = blocks[1].splitlines()
    assert number == "2" and " --> " in span and words(text) == "good morning everyone"
    start = span.split(" --> ")[0]
    assert start.startswith("00:00:01,") or start.startswith("00:00:02,")


def test_offline_mode_and_44k_file(start_stand_in, tmp_path):
    import numpy as np
    import soxr

    script = compose([0.3, "please open the door", 0.4])
    server = start_stand_in(engine=WholePhrasesEngine.of(script))
    audio = soxr.resample(script.audio, 16000, 44100).astype(np.float32)
    wav = write_wav(tmp_path / "door.wav", audio, rate=44100)
    run = run_cli(str(wav), "--url", server.url, "--fast", "--mode", "offline")
    assert run.returncode == 0, run.stderr
    assert words(run.stdout).endswith("please open the door")


def test_unreachable_server_and_bad_arguments_are_clear(tmp_path):
    wav = write_wav(tmp_path / "x.wav", compose([0.2]).audio)
    run = run_cli(str(wav), "--url", "ws://127.0.0.1:9", "--fast")
    assert run.returncode == 1 and run.stderr.startswith("error:")
    run = run_cli()
    assert run.returncode == 2 and "give an audio file or --mic" in run.stderr
    run = run_cli(str(tmp_path / "missing.wav"))
    assert run.returncode == 1 and "error:" in run.stderr


def test_srt_format():
    finals = [
        {"start_ms": 3_723_004, "end_ms": 3_725_500, "final_text": "hi"},
        {"start_ms": 0, "end_ms": 1, "final_text": ""},
    ]
    assert to_srt(finals) == "1\n01:02:03,004 --> 01:02:05,500\nhi\n"

"""FunASR's own client behaviour against our server, in each of its modes."""

import pytest

from tests.funasr_client import run_funasr_client
from tests.speech import compose, to_pcm16
from tests.wsclient import words

SCRIPT = ["hello world", 0.8, "good morning everyone"]


@pytest.fixture(scope="module")
def pcm():
    return to_pcm16(compose([0.4, *SCRIPT, 0.6]).audio)


@pytest.mark.parametrize("mode", ["offline", "2pass", "online"])
async def test_funasr_client_prints_the_transcript_and_gets_its_acknowledgement(shared_server, pcm, mode):
    result = await run_funasr_client(shared_server.url, pcm, mode, send_without_sleep=mode != "online")
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

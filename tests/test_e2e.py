"""End to end: espeak-ng English streamed in real time through the server and the embedded model.

Threshold: on this machine the embedded Whisper base transcribes this script with a WER of about
0.05 (espeak's robotic voice costs a few words, e.g. "jumps" -> "jump"). The test allows 0.25:
loose enough for run-to-run jitter in segmentation, far below the ~1.0 of broken recognition
(empty output, wrong audio scaling, wrong sample rate or a shifted segment all push it over).
"""

import numpy as np
import pytest
import soxr

from tests.speech import compose
from tests.wer import word_error_rate
from tests.wsclient import finals, transcribe

WER_THRESHOLD = 0.25
SCRIPT = [
    "welcome to the lecture on modern computer networks",
    "today we will talk about how packets travel across the internet",
    "please write down any questions you have",
    "we will answer them at the end of the session",
    "thank you all for coming",
]


@pytest.fixture(scope="module")
def lecture():
    parts = [0.5]
    for sentence, pause in zip(SCRIPT, [0.7, 1.0, 0.5, 1.2, 0.8]):
        parts += [sentence, pause]
    return compose(parts)


async def test_real_time_stream_is_transcribed_accurately(shared_server, lecture):
    replies = await transcribe(shared_server.url, lecture.audio, realtime=True)
    hypothesis = " ".join(r["final_text"] for r in finals(replies))
    wer = word_error_rate(" ".join(SCRIPT), hypothesis)
    print(f"WER {wer:.3f}: {hypothesis}")
    assert wer <= WER_THRESHOLD, hypothesis
    assert replies[-1]["type"] == "end"
    # one caption per sentence, timed where the sentence really is in the stream
    assert len(finals(replies)) == len(SCRIPT)
    for reply, (start, end) in zip(finals(replies), lecture.spans):
        assert abs(reply["start_ms"] - start / 16) <= 150 and abs(reply["end_ms"] - end / 16) <= 150


async def test_44k_stream_is_transcribed_accurately(shared_server, lecture):
    audio = soxr.resample(lecture.audio, 16000, 44100).astype(np.float32)
    replies = await transcribe(shared_server.url, audio, rate=44100)
    hypothesis = " ".join(r["final_text"] for r in finals(replies))
    assert word_error_rate(" ".join(SCRIPT), hypothesis) <= WER_THRESHOLD, hypothesis


def test_wer_detects_broken_recognition():
    reference = " ".join(SCRIPT)
    assert word_error_rate(reference, reference.upper() + ".") == 0
    assert word_error_rate(reference, "") == 1
    assert word_error_rate(reference, "thank you") > 0.9

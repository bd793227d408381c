"""Per-stream decisions that need no socket: the language a stream on "auto" keeps, and a file sent
over the socket kept within its size limit (server/stream_settings.py, server/file_upload.py)."""

from __future__ import annotations

import os

import pytest

from inference.engines.base import DecodeOptions, DecodeResult
from server.file_upload import FileUpload, is_wav_header
from server.stream_settings import LANGUAGE_SURE, kept_language


def heard(text: str, language: str | None, probability: float) -> DecodeResult:
    return DecodeResult(text, extra={"language": language, "language_probability": probability})


@pytest.mark.parametrize("asked", [None, "auto"])
def test_a_stream_on_auto_keeps_the_first_language_heard_with_confidence(asked):
    options = DecodeOptions(language=asked, hotwords=(("会议", 10),))
    unsure = kept_language(options, heard("bonjour", "fr", LANGUAGE_SURE - 0.01))
    assert unsure is options  # not sure enough: detected again next time
    sure = kept_language(options, heard("good morning", "en", LANGUAGE_SURE))
    assert sure.language == "en" and sure.hotwords == options.hotwords  # only the language changes
    assert kept_language(sure, heard("早上好", "zh", 0.99)).language == "en"  # kept, never detected again


def test_a_language_the_client_chose_or_a_result_without_words_changes_nothing():
    chosen = DecodeOptions(language="de")
    assert kept_language(chosen, heard("good morning", "en", 0.99)) is chosen
    auto = DecodeOptions(language="auto")
    assert kept_language(auto, heard("", "en", 0.99)) is auto  # silence says no language
    assert kept_language(auto, DecodeResult("good morning")) is auto  # an engine that detects none


def test_a_file_upload_keeps_every_byte_within_its_limit_and_leaves_nothing_behind():
    upload = FileUpload(limit_bytes=10, suffix="wav")
    assert upload.add(b"RIFF") and upload.add(b"\x00" * 6) and upload.failure is None
    assert not upload.add(b"x") and "jobs.max_upload_mb" in upload.failure  # one byte over: refused, said
    path = upload.seal()
    with open(path, "rb") as sealed:
        assert sealed.read() == b"RIFF" + b"\x00" * 6  # what was accepted, nothing of the refused frame
    upload.discard()
    assert not os.path.exists(path)


def test_a_wav_header_is_told_from_pcm():
    assert is_wav_header(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    for other in (b"RIFF\x24\x00\x00\x00AVI ", b"RIFF", b"\x00" * 44):
        assert not is_wav_header(other)

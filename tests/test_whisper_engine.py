"""The embedded Whisper engine: assembly from PyPI parts, per-request options, silence."""

from dataclasses import replace

import numpy as np
import pytest

from inference.engines.base import DecodeOptions
from inference.engines.whisper import WhisperEngine, assemble_embedded_model
from inference.model_hub import ModelUnavailable
from settings.config import load
from tests.speech import compose
from tests.wer import normalise


def test_assembly_is_done_once_and_complete(tmp_path):
    target = assemble_embedded_model(tmp_path)
    model_bin = target / "model.bin"
    first = model_bin.stat().st_mtime_ns
    assert {p.name for p in target.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert assemble_embedded_model(tmp_path) == target and model_bin.stat().st_mtime_ns == first
    model_bin.write_bytes(b"truncated")  # a broken cache is rebuilt, not trusted
    assemble_embedded_model(tmp_path)
    assert model_bin.stat().st_size > 50_000_000


def test_hotwords_steer_recognition(whisper_engine):
    # Whisper base takes hotwords only as a prompt, a weak nudge; this case is robust to padding.
    audio = compose([0.3, "we use pytorch and numpy", 0.4]).audio
    other = compose([0.3, "good morning everyone", 0.4]).audio
    # one batch mixing hinted and plain requests (their prompts differ in length)
    plain, hinted, unrelated = whisper_engine.decode(
        [audio, audio, other],
        [DecodeOptions(), DecodeOptions(hotwords=(("PyTorch", 20), ("NumPy", 20))), DecodeOptions()],
    )
    assert "pytorch" not in normalise(plain.text)  # the plain model writes what it hears
    assert "pytorch" in normalise(hinted.text)
    assert normalise(unrelated.text) == ["good", "morning", "everyone"]


def test_language_is_per_request(whisper_engine, no_temperature_fallback):
    audio = compose([0.3, "good morning everyone", 0.4]).audio
    english, french = whisper_engine.decode(
        [audio, audio], [DecodeOptions(language="en"), DecodeOptions(language="fr")]
    )
    assert (english.extra["language"], french.extra["language"]) == ("en", "fr")
    assert normalise(english.text) == ["good", "morning", "everyone"]
    # English speech decoded as French falls below the log-probability guard; with the fallback's
    # sampling on, a sample could come back as the English words (it did in two CI runs).
    assert normalise(french.text) != normalise(english.text)


def test_silence_decodes_to_nothing(whisper_engine):
    (result,) = whisper_engine.decode([np.zeros(16000, dtype=np.float32)], [DecodeOptions()])
    assert result.text == ""


def test_a_model_dir_that_holds_no_model_is_one_line_naming_the_setting(tmp_path):
    # Before: faster-whisper took the path for a Hugging Face repository id (a traceback, or a fetch).
    for model_dir in (tmp_path / "missing", tmp_path):  # absent; a directory without model.bin
        with pytest.raises(ModelUnavailable) as caught:
            WhisperEngine(replace(load().whisper, model_dir=str(model_dir)), "cpu")
        message = str(caught.value)
        assert "whisper.model_dir" in message and str(model_dir) in message and "\n" not in message

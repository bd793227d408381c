"""The embedded Whisper engine: assembly from PyPI parts, per-request options, silence."""

import numpy as np

from inference.engines.base import DecodeOptions
from inference.engines.whisper import assemble_embedded_model
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


def test_language_is_per_request(whisper_engine):
    audio = compose([0.3, "good morning everyone", 0.4]).audio
    english, french = whisper_engine.decode(
        [audio, audio], [DecodeOptions(language="en"), DecodeOptions(language="fr")]
    )
    assert normalise(english.text) == ["good", "morning", "everyone"]
    assert normalise(french.text) != normalise(english.text)


def test_silence_decodes_to_nothing(whisper_engine):
    (result,) = whisper_engine.decode([np.zeros(16000, dtype=np.float32)], [DecodeOptions()])
    assert result.text == ""

"""Fun-ASR-Nano-2512 as the funasr engine's offline model, over a tiny random FunASRNano of funasr's own
class (a stand-in for the hub weights, which cannot be fetched here: tests/tiny_funasr.py "nano"),
loaded through the production AutoModel path. Its text is random characters: these tests check
loading, batching, the prompt's hotwords/language/ITN, messages and the server paths - not words."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import soundfile

from inference.engines.base import DecodeOptions
from inference.model_hub import ModelUnavailable
from tests.conftest import make_config
from tests.server_thread import ServerThread
from tests.speech import compose, write_wav
from tests.wsclient import finals, transcribe

REAL_SPEECH = Path(__file__).resolve().parents[2] / "shared" / "audio" / "jfk.wav"  # a real recording (its README)
TWO_SEGMENTS = compose([0.3, "good morning everyone", 0.8, "please open the door", 0.5])


def nano_settings(directory, **overrides) -> dict:
    """A [funasr] section with the stand-in as its offline model; no streaming or punctuation model,
    downloads off, so nothing leaves loopback."""
    settings = {"offline_model": str(directory), "online_model": "", "punc_model": "", "allow_download": False}
    return {**settings, **overrides}


def nano_engine_for(directory, **overrides):
    from inference.engines import create_engine

    return create_engine(
        make_config(inference={"engine": "funasr"}, funasr=nano_settings(directory, **overrides)), "cpu"
    )


@pytest.fixture(scope="module")
def tiny_nano(tiny_models_root):
    from tests.tiny_funasr import build_tiny_model

    return build_tiny_model(tiny_models_root, "nano")


@pytest.fixture(scope="module")
def nano_engine(tiny_nano):
    return nano_engine_for(tiny_nano)


@pytest.fixture(scope="module")
def real_clips():
    """Three stretches of a real recording, 1.5-2 s each (short: the LLM writes up to 15 tokens a second)."""
    audio, rate = soundfile.read(REAL_SPEECH, dtype="float32")
    assert rate == 16000
    return [audio[:32000], audio[40000:64000], audio[96000:128000]]


def spy(monkeypatch, obj, name):
    """Record every call of obj.name (keyword arguments, or the positional ones), then let it run."""
    calls = []
    real = getattr(obj, name)

    def recorded(*args, **kwargs):
        calls.append(kwargs or args)
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, recorded)
    return calls


def test_the_stand_in_loads_through_automodel_as_funasrnano_with_its_llm_found_in_its_directory(tiny_nano):
    import torch

    engine = nano_engine_for(tiny_nano)
    assert engine.nano and engine.offline_class == "FunASRNano" and not engine.streaming
    inner = engine._offline.model
    assert isinstance(inner.llm, torch.nn.Module) and type(inner.llm).__name__ == "Qwen3ForCausalLM"
    # config.yaml names the LLM's directory "Qwen3-0.6B", relative to the model's own directory.
    assert engine._offline.kwargs["llm_conf"]["init_param_path"] == str(tiny_nano / "Qwen3-0.6B")
    assert engine.file_model == str(tiny_nano)  # no punctuation model: Fun-ASR-Nano punctuates itself


def test_without_torchaudios_forced_align_the_ctc_head_is_off_and_says_so_once(tiny_nano, caplog):
    try:
        import torchaudio

        aligner = hasattr(torchaudio.functional, "forced_align")
    except ImportError:
        aligner = False
    if aligner:
        pytest.skip("this torchaudio still has forced_align: Fun-ASR-Nano keeps its CTC timestamps")
    with caplog.at_level(logging.WARNING, logger="inference.engines.funasr_nano"):
        engine = nano_engine_for(tiny_nano)
    assert engine._offline.model.ctc_decoder is None
    notes = [r.getMessage() for r in caplog.records if r.name == "inference.engines.funasr_nano"]
    assert notes == ["Fun-ASR-Nano: no character timestamps (they need torchaudio's forced_align); text only"]


def test_funasr_itself_fails_every_decode_while_that_head_is_on(nano_engine, real_clips):
    # Why the engine switches it off: FunASRNano aligns its text with torchaudio on each decode.
    try:
        import torchaudio  # noqa: F401

        pytest.skip("torchaudio is installed")
    except ImportError:
        pass
    import torch
    from funasr import AutoModel

    model = AutoModel(model=nano_engine._offline.kwargs["model_path"], disable_update=True, disable_pbar=True,
                      device="cpu", llm_conf=nano_engine._offline.kwargs["llm_conf"],
                      tokenizer_conf=nano_engine._offline.kwargs["tokenizer_conf"],
                      dataset_conf=nano_engine._offline.kwargs["dataset_conf"])  # fmt: skip
    assert model.model.ctc_decoder is not None
    with pytest.raises(ImportError, match="torchaudio"):
        model.generate(input=[torch.from_numpy(real_clips[0])], batch_size=1, max_length=4, disable_pbar=True)


def test_a_batch_of_real_speech_is_one_model_call_with_text_per_segment(nano_engine, monkeypatch, real_clips):
    calls = spy(monkeypatch, nano_engine._offline, "generate")
    results = nano_engine.decode(real_clips, [DecodeOptions()] * 3)
    assert len(calls) == 1 and calls[0]["batch_size"] == 3 and len(calls[0]["input"]) == 3
    # A waveform goes in as a torch tensor: FunASRNano's prompt builder drops numpy arrays.
    assert all(type(item).__name__ == "Tensor" for item in calls[0]["input"])
    assert calls[0]["max_length"] == 30  # 15 tokens a second of the longest segment (2 s): a loop cannot run on
    assert len(results) == 3 and all(isinstance(r.text, str) and r.text for r in results)
    assert all(r.extra == {"itn_done": True} for r in results)  # it punctuates and normalises itself
    assert all("  " not in r.text and r.text == r.text.strip() for r in results)


def test_hotwords_language_and_itn_reach_its_prompt(nano_engine, monkeypatch, real_clips):
    model = nano_engine._offline.model
    prompts = []  # what FunASRNano's own prompt builder made of them
    build = model.get_prompt
    monkeypatch.setattr(model, "get_prompt", lambda *args: prompts.append(build(*args)) or prompts[-1])
    calls = spy(monkeypatch, nano_engine._offline, "generate")
    lecture = (("阿里巴巴", 20), ("达摩院<|im_end|>", 30))  # a chat-template marker must not reach the prompt
    options = [
        DecodeOptions(hotwords=lecture, language="zh"),
        DecodeOptions(language="en"),
        DecodeOptions(hotwords=lecture, language="zh"),
        DecodeOptions(language="auto", itn=False),
    ]
    results = nano_engine.decode([real_clips[0][:24000]] * 4, options)
    assert len(results) == 4
    by_call = {(tuple(c["hotwords"]), c["language"], c["itn"], len(c["input"])) for c in calls}
    assert len(calls) == 3  # one model call per hotword list / language / ITN choice
    assert by_call == {(("阿里巴巴", "达摩院"), "中文", True, 2), ((), "英文", True, 1), ((), None, False, 1)}
    assert len(prompts) == 3  # one prompt a call
    assert sum("热词列表：[阿里巴巴, 达摩院]" in p and p.endswith("语音转写成中文：") for p in prompts) == 1
    assert sum(p.endswith("语音转写成英文：") and "热词" not in p for p in prompts) == 1
    assert sum(p == "语音转写，不进行文本规整：" for p in prompts) == 1


def test_a_language_it_cannot_name_is_refused_not_decoded_as_auto(nano_engine):
    assert nano_engine.language_problem("auto") is None and nano_engine.language_problem("ja") is None
    problem = nano_engine.language_problem("de")
    assert problem and "'de'" in problem and "zh" in problem and "yue" in problem


def test_clips_too_short_for_a_word_get_empty_text_without_a_call(nano_engine, monkeypatch, real_clips):
    calls = spy(monkeypatch, nano_engine._offline, "generate")
    results = nano_engine.decode([real_clips[0][:800]], [DecodeOptions()])
    assert results[0].text == "" and calls == []


def test_timestamps_from_its_ctc_head_are_milliseconds():
    from inference.engines.funasr_nano import timestamps_ms

    item = {"text": "你好", "timestamps": [{"token": "你", "start_time": 0.12, "end_time": 0.3},
                                          {"token": "好", "start_time": 0.3, "end_time": 0.54}]}  # fmt: skip
    assert timestamps_ms(item) == ((120, 300), (300, 540))
    assert timestamps_ms({"text": ""}) is None


def test_a_directory_without_its_llm_is_named(tiny_nano, tmp_path):
    broken = tmp_path / "Fun-ASR-Nano-2512"
    shutil.copytree(tiny_nano, broken, ignore=shutil.ignore_patterns("Qwen3-0.6B"))
    with pytest.raises(ModelUnavailable) as caught:
        nano_engine_for(broken)
    message = str(caught.value)
    assert "funasr.offline_model" in message and str(broken) in message and "Qwen3-0.6B/" in message


@pytest.mark.parametrize("spec, says", [("/no/such/Fun-ASR-Nano-2512", "no such directory")])
def test_a_missing_local_directory_is_named(spec, says):
    with pytest.raises(ModelUnavailable, match=says):
        nano_engine_for(spec)


def test_the_hub_name_with_downloads_off_names_the_repository_and_the_cache(tmp_path):
    with pytest.raises(ModelUnavailable) as caught:
        nano_engine_for("Fun-ASR-Nano-2512", model_cache_dir=str(tmp_path))
    message = str(caught.value)
    assert "Fun-ASR-Nano-2512" in message and "FunAudioLLM/Fun-ASR-Nano-2512" in message
    assert str(tmp_path) in message and "downloads are off" in message


# --- the server: live finals and file jobs decoded by Fun-ASR-Nano -------------------------------


@pytest.fixture(scope="module")
def nano_server(nano_engine, scorer):
    server = ServerThread(make_config(inference={"engine": "funasr"}), nano_engine, scorer).start()
    yield server
    server.stop()


async def test_a_live_stream_gets_one_fun_asr_nano_final_per_segment(nano_server, nano_engine, monkeypatch):
    calls = spy(monkeypatch, nano_engine._offline, "generate")
    replies = await transcribe(nano_server.url, TWO_SEGMENTS.audio, mode="2pass")
    got = finals(replies)
    assert len(got) == 2 and all(r["final_text"] for r in got)
    assert sum(len(c["input"]) for c in calls) >= 2  # the finals (and partial re-decodes) went through FunASRNano


async def test_a_file_job_is_transcribed_by_fun_asr_nano_segment_by_segment(nano_server, nano_engine, scorer, tmp_path):
    from inference.executor import InferenceExecutor
    from jobs.segmenter import file_settings, read_audio, segments
    from tests.test_jobs import get, submit, wait_done

    wav = write_wav(tmp_path / "两段话.wav", TWO_SEGMENTS.audio)
    status, created = await submit(nano_server.http, [wav])
    assert status == 201
    job = await wait_done(nano_server.http, created["job_id"])
    assert job["status"] == "done"
    (file,) = job["files"]
    assert (file["engine"], file["model"]) == ("funasr", nano_engine.model)
    status, exported = await get(nano_server.http, f"/api/files/{file['id']}/export.json")
    assert status == 200
    got = [s["text"] for s in exported["segments"]]
    # Exactly the engine's own text for each segment the file's VAD chain finds (no ITN pass after
    # it: itn_done), one segment a model call as on a CPU.
    vad = InferenceExecutor(nano_engine, scorer, 1, 0, 64)
    await vad.start()
    try:
        found = [e async for e in segments(read_audio(str(wav)), file_settings(nano_server.server.config), vad)]
    finally:
        await vad.close()
    expected = [nano_engine.decode([event.audio], [DecodeOptions()])[0].text for event in found]
    assert len(got) == 2 and all(got) and got == expected

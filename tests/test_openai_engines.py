"""The OpenAI endpoint follows /api/jobs' engine rule (server.jobs_api.requested_engine): a name of this
server's engines or their models that is not loaded is a 400 listing the loaded ones, while OpenAI's
own names and other foreign names get the live engine; jobs.max_file_audio_s applies; a `prompt`
that is a hotword list keeps its weights."""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest

from tests.speech import compose, write_wav
from tests.test_jobs import LECTURE, submit
from tests.test_media import write_mka_that_says_it_lasts
from tests.wsclient import words

SHORT = compose([0.3, "good morning everyone", 0.4])


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("openai-engines") / "short.wav", SHORT.audio)


async def transcribe(http: str, path, **fields) -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    for key, value in fields.items():
        form.add_field(key, value)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http}/v1/audio/transcriptions", data=form) as response:
            return response.status, await response.json(content_type=None)


@pytest.mark.parametrize("model", ["paraformer-zh", "iic/SenseVoiceSmall", "funasr", "large-v3", "instant"])
async def test_an_engine_or_model_this_server_has_not_loaded_is_a_400_on_both_endpoints(
    shared_server, short_wav, model
):
    status, body = await transcribe(shared_server.http, short_wav, model=model)
    assert status == 400, body
    error = body["error"]
    assert error["param"] == "model" and error["code"] == "unknown_engine"
    assert f"{model!r} is not loaded" in error["message"] and "whisper (" in error["message"]  # what is loaded
    status, body = await submit(shared_server.http, [short_wav], {"engine": model})
    assert status == 400 and body["code"] == "unknown_engine"  # /api/jobs refuses the same name


@pytest.mark.parametrize("model", ["whisper-1", "gpt-4o-mini-transcribe", "some-tools-default", "whisper", "base", ""])
async def test_openai_names_and_foreign_names_get_the_live_engine(shared_server, short_wav, model):
    status, body = await transcribe(shared_server.http, short_wav, model=model)
    assert status == 200, body
    assert words(body["text"]) == "good morning everyone"


async def test_a_file_longer_than_max_file_audio_s_is_refused_naming_the_setting(start_server, tmp_path):
    server = start_server(jobs={"max_file_audio_s": 3})
    long_wav = write_wav(tmp_path / "long.wav", np.zeros(16000 * 5, dtype=np.float32))
    status, body = await transcribe(server.http, long_wav, model="whisper-1")
    assert status == 400 and body["error"]["code"] == "audio_too_long"
    assert "longer than 3 s" in body["error"]["message"] and "jobs.max_file_audio_s" in body["error"]["message"]
    # A header that lies (1 s said, 6 s inside) is caught while decoding.
    liar = write_mka_that_says_it_lasts(tmp_path / "liar.mka", LECTURE.audio, said_s=1.0)
    status, body = await transcribe(server.http, liar, model="whisper-1")
    assert status == 400 and "jobs.max_file_audio_s" in body["error"]["message"], body


@pytest.mark.parametrize(
    "prompt, hotwords",
    [
        ("阿里巴巴 30\n达摩院", (("阿里巴巴", 30), ("达摩院", 20))),
        ('{"阿里巴巴": 30}', (("阿里巴巴", 30),)),
        ("阿里巴巴 30 达摩院 40", (("阿里巴巴", 30), ("达摩院", 40))),
        ("A lecture about machine learning.", (("A lecture about machine learning.", 20),)),
        ("", ()),
    ],
)
def test_a_prompt_that_is_a_hotword_list_keeps_its_weights(prompt, hotwords):
    from server.openai_api import _prompt_hotwords

    assert _prompt_hotwords(prompt) == hotwords


def test_one_rule_names_engines_by_name_or_by_the_model_that_decodes_files():
    from types import SimpleNamespace

    from server.jobs_api import UnknownEngine, requested_engine

    whisper = SimpleNamespace(
        model="whisper-base (embedded, CTranslate2)", file_model="whisper-base (embedded, CTranslate2)"
    )
    funasr = SimpleNamespace(
        model="paraformer-zh + paraformer-zh-streaming + ct-punc", file_model="paraformer-zh + ct-punc"
    )
    executor = SimpleNamespace(engines={"whisper": whisper, "funasr": funasr})
    named = [("funasr", "funasr"), ("paraformer-zh", "funasr"), ("Paraformer-ZH", "funasr"), ("whisper", "whisper"),
             ("base", "whisper"), ("whisper-base", "whisper"), ("", None)]  # fmt: skip
    for value, engine in named:
        assert requested_engine(executor, value) == engine, value
        assert requested_engine(executor, value, foreign_names=True) == engine, value
    for value in ("whisper-1", "gpt-4o-transcribe", "my-tool-default"):
        assert requested_engine(executor, value, foreign_names=True) is None  # the live engine answers
        with pytest.raises(UnknownEngine):
            requested_engine(executor, value)  # /api/jobs: every name must match a loaded engine
    for value in ("SenseVoiceSmall", "iic/SenseVoiceSmall", "large-v3", "instant", "ct-punc", "fun-asr-nano-2512"):
        with pytest.raises(UnknownEngine):  # this server's names, not loaded: refused on both endpoints
            requested_engine(executor, value, foreign_names=True)
    sensevoice = SimpleNamespace(model="iic/SenseVoiceSmall + ct-punc", file_model="iic/SenseVoiceSmall + ct-punc")
    executor = SimpleNamespace(engines={"funasr": sensevoice})
    assert requested_engine(executor, "SenseVoiceSmall", foreign_names=True) == "funasr"

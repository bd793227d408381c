"""The funasr engine over tiny random FunASR models (stand-ins for hub weights), loaded through the
production AutoModel path. These check calls, batching, caches and messages - not words."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.engines.base import DecodeOptions, DecodeResult
from inference.executor import InferenceExecutor
from inference.model_hub import ModelUnavailable
from tests.conftest import funasr_settings, make_config
from tests.speech import compose

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = compose([0.2, "good morning everyone", 0.3])


@pytest.fixture
def clips():
    rng = np.random.default_rng(7)
    speech = SCRIPT.audio
    return [speech, speech[: len(speech) // 2], (rng.standard_normal(24000) * 0.05).astype(np.float32), speech[::-1]]


def spy(monkeypatch, model):
    """Record every generate() call of a real FunASR model, then let it run."""
    calls = []
    real = model.generate

    def generate(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return calls


def test_a_batch_of_finals_is_one_offline_call_with_clean_text_and_timestamps(funasr_engine, monkeypatch, clips):
    calls = spy(monkeypatch, funasr_engine._offline)
    results = funasr_engine.decode(clips, [DecodeOptions()] * len(clips))
    assert len(calls) == 1 and calls[0]["batch_size"] == 4 and len(calls[0]["input"]) == 4
    assert "hotword" not in calls[0]  # even an empty hotword string switches SeACo's biasing on
    assert len(results) == 4 and all(isinstance(r, DecodeResult) for r in results)
    for result, clip in zip(results, clips):
        assert "  " not in result.text and not any(
            a > "\u3000" and b == " " and c > "\u3000" for a, b, c in zip(result.text, result.text[1:], result.text[2:])
        ), f"characters must not be space-separated: {result.text!r}"
        if result.timestamps:
            ends = [end for _, end in result.timestamps]
            assert ends == sorted(ends) and ends[-1] <= len(clip) * 1000 // 16000 + 100


def test_hotwords_reach_seaco_one_call_per_hotword_list(funasr_engine, monkeypatch, clips):
    calls = spy(monkeypatch, funasr_engine._offline)
    lecture = (("阿里巴巴", 20), ("达摩院", 30))
    options = [
        DecodeOptions(hotwords=lecture),
        DecodeOptions(),
        DecodeOptions(hotwords=lecture),
        DecodeOptions(hotwords=(("http://evil.example/x", 20), ("语音", 20), ("secrets.txt", 20))),
    ]
    funasr_engine.decode(clips, options)
    by_hotword = {call.get("hotword"): len(call["input"]) for call in calls}
    # URL- and file-like phrases never reach FunASR, which would fetch or open them.
    assert by_hotword == {"阿里巴巴 达摩院": 2, None: 1, "语音": 1}


def test_clips_too_short_for_the_model_get_empty_text_without_a_call(funasr_engine, monkeypatch, clips):
    calls = spy(monkeypatch, funasr_engine._offline)
    results = funasr_engine.decode([clips[0][:100], clips[0]], [DecodeOptions()] * 2)
    assert results[0].text == "" and len(calls) == 1 and len(calls[0]["input"]) == 1


def test_punctuation_runs_on_finals_not_on_partials(funasr_engine, monkeypatch, clips):
    punc_calls = spy(monkeypatch, funasr_engine._punc)
    partial = funasr_engine.decode([clips[0]], [DecodeOptions(partial=True)])[0]
    assert punc_calls == []
    final = funasr_engine.decode([clips[0]], [DecodeOptions()])[0]
    assert partial.text, "the tiny model writes (random) characters for speech"
    assert len(punc_calls) == 1 and punc_calls[0]["input"] == partial.text
    assert final.text != partial.text  # the punctuation model changed it (random marks, but marks)


def run_stream(engine, state, audio, chunk=9600):
    texts = []
    for offset in range(0, len(audio) - chunk + 1, chunk):
        step = (state, audio[offset : offset + chunk], False, DecodeOptions(partial=True))
        texts.append(engine.stream([step])[0].text)
    tail = audio[len(audio) // chunk * chunk :]
    texts.append(engine.stream([(state, tail, True, DecodeOptions())])[0].text)
    return texts


def test_streaming_caches_of_two_streams_are_kept_apart(funasr_engine, clips):
    a, b = clips[0], clips[3]
    alone_a = run_stream(funasr_engine, funasr_engine.new_stream_state((5, 10, 5)), a)
    alone_b = run_stream(funasr_engine, funasr_engine.new_stream_state((5, 10, 5)), b)
    assert alone_a != alone_b
    state_a, state_b = funasr_engine.new_stream_state((5, 10, 5)), funasr_engine.new_stream_state((5, 10, 5))
    together_a, together_b = [], []
    for offset in range(0, 9600 * 3, 9600):  # interleave chunk by chunk, in one engine call each time
        pair = funasr_engine.stream(
            [
                (state_a, a[offset : offset + 9600], False, DecodeOptions(partial=True)),
                (state_b, b[offset : offset + 9600], False, DecodeOptions(partial=True)),
            ]
        )
        together_a.append(pair[0].text)
        together_b.append(pair[1].text)
    assert together_a == alone_a[:3] and together_b == alone_b[:3]
    # Text so far only grows; the final chunk flushes the cache so the next segment starts clean.
    assert all(later.startswith(earlier) for earlier, later in zip(alone_a, alone_a[1:-1]))
    run_stream(funasr_engine, state_a, a[9600 * 3 :])
    assert state_a.cache == {} or all(not v for v in state_a.cache.values())


async def test_executor_batches_finals_of_many_streams_and_keeps_each_streams_chunks_in_order(
    funasr_engine, scorer, monkeypatch, clips
):
    offline_calls = spy(monkeypatch, funasr_engine._offline)
    executor = InferenceExecutor(funasr_engine, scorer, 8, 50, 64)
    await executor.start()
    try:
        finals = [executor.submit_final(i, 0, clip, DecodeOptions()) for i, clip in enumerate(clips)]
        a, b = clips[0], clips[3]
        state_a, state_b = executor.new_stream_state((5, 10, 5)), executor.new_stream_state((5, 10, 5))
        steps_a = [executor.submit_step(10, 0, state_a, a[o : o + 9600], False, DecodeOptions(partial=True))
                   for o in range(0, 9600 * 3, 9600)]  # fmt: skip
        steps_b = [executor.submit_step(11, 0, state_b, b[o : o + 9600], False, DecodeOptions(partial=True))
                   for o in range(0, 9600 * 3, 9600)]  # fmt: skip
        results = await asyncio.gather(*finals)
        texts_a = [r.text for r in await asyncio.gather(*steps_a)]
        texts_b = [r.text for r in await asyncio.gather(*steps_b)]
    finally:
        await executor.close()
    assert len(offline_calls) == 1 and len(offline_calls[0]["input"]) == 4  # one batch for four streams
    assert all("queue_ms" in r.extra and "decode_ms" in r.extra for r in results)
    expected_a = run_stream(funasr_engine, funasr_engine.new_stream_state((5, 10, 5)), a)[:3]
    expected_b = run_stream(funasr_engine, funasr_engine.new_stream_state((5, 10, 5)), b)[:3]
    assert texts_a == expected_a and texts_b == expected_b


async def test_a_streams_queued_chunks_all_run_with_no_other_work_arriving(funasr_engine, scorer, clips):
    # A closing segment hands its remaining chunks over at once. One chunk per stream goes in each
    # model call; the rest must follow by themselves (they once waited for unrelated new work).
    executor = InferenceExecutor(funasr_engine, scorer, 4, 30, 64)
    await executor.start()
    try:
        state, a = executor.new_stream_state((5, 10, 5)), clips[0]
        steps = [executor.submit_step(7, 0, state, a[o : o + 9600], o >= 9600, DecodeOptions(partial=True))
                 for o in (0, 9600)]  # fmt: skip
        texts = [r.text for r in await asyncio.wait_for(asyncio.gather(*steps), 30)]
    finally:
        await executor.close()
    assert len(texts) == 2 and texts[1].startswith(texts[0])


def test_sensevoice_as_the_offline_model_strips_its_tags_and_does_its_own_itn(tiny_funasr, clips):
    from inference.engines import create_engine

    sensevoice = str(tiny_funasr["sensevoice"])
    settings = funasr_settings(tiny_funasr, offline_model=sensevoice, online_model="", punc_model="")
    engine = create_engine(make_config(inference={"engine": "funasr"}, funasr=settings), "cpu")
    assert engine.sensevoice and not engine.streaming
    results = engine.decode(clips[:2], [DecodeOptions(language="zh"), DecodeOptions()])
    assert all("<|" not in r.text for r in results)
    assert all(r.extra["itn_done"] for r in results)


def test_long_segment_pause_closes_are_refused_for_a_model_that_cannot_join_them(tiny_funasr):
    # funasr.long_segment_s closes long segments at short pauses, joined on Paraformer's character
    # times; SenseVoice decodes each segment alone, so a word split by such a pause stays split.
    from inference.engines import create_engine

    sensevoice = str(tiny_funasr["sensevoice"])
    settings = funasr_settings(
        tiny_funasr, offline_model=sensevoice, online_model="", punc_model="", long_segment_s=3.0
    )
    with pytest.raises(ModelUnavailable) as caught:
        create_engine(make_config(inference={"engine": "funasr"}, funasr=settings), "cpu")
    assert "funasr.long_segment_s = 3" in str(caught.value) and "set it to 0" in str(caught.value)
    paraformer = funasr_settings(tiny_funasr, online_model="", punc_model="", long_segment_s=3.0)
    assert not create_engine(make_config(inference={"engine": "funasr"}, funasr=paraformer), "cpu").sensevoice


def test_missing_hub_model_fails_with_one_clear_message(tiny_funasr, tmp_path):
    from inference.engines import create_engine

    settings = funasr_settings(tiny_funasr, offline_model="paraformer-zh", model_cache_dir=str(tmp_path))
    with pytest.raises(ModelUnavailable) as caught:
        create_engine(make_config(inference={"engine": "funasr"}, funasr=settings), "cpu")
    message = str(caught.value)
    assert "paraformer-zh" in message and str(tmp_path) in message and "funasr.offline_model" in message
    assert "iic/speech_seaco_paraformer" in message  # the repo it would download


def test_hub_names_are_funasrs_own_table_read_without_importing_funasr(tmp_path):
    from funasr.download.name_maps_from_hub import name_maps_hf, name_maps_ms

    from inference.model_hub import hub_id

    assert name_maps_ms and name_maps_hf
    assert all(hub_id(name, "ms") == repo for name, repo in name_maps_ms.items())
    assert all(hub_id(name, "hf") == repo for name, repo in name_maps_hf.items())
    assert hub_id("Fun-ASR-Nano-2512", "ms") == "FunAudioLLM/Fun-ASR-Nano-2512" and hub_id("a/b", "hf") == "a/b"
    # A model missing from the cache is said before funasr's package (every model it has, ~15 s
    # to import on 2 cores) is imported: in a fresh process, funasr is not in sys.modules after it.
    probe = (
        "import sys\n"
        "from inference.model_hub import ModelUnavailable, resolve_model_dir\n"
        "try:\n"
        f"    resolve_model_dir('paraformer-zh', 'offline_model', 'ms', {str(tmp_path)!r}, allow_download=False)\n"
        "except ModelUnavailable as exc:\n"
        "    print('iic/speech_seaco_paraformer' in str(exc), 'funasr' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.split() == ["True", "False"], done.stdout + done.stderr[-2000:]


async def test_a_start_that_fails_on_its_engine_stops_the_vad_worker_started_beside_it(tiny_funasr, tmp_path):
    # The VAD worker process starts while the engines load (a server starts seconds sooner). When
    # the engine cannot load, the start fails with the engine's error and the worker is stopped:
    # a server object that failed to start leaves no process behind.
    import multiprocessing

    from server.app import CaptionServer

    settings = funasr_settings(tiny_funasr, offline_model="paraformer-zh", model_cache_dir=str(tmp_path))
    config = make_config(inference={"engine": "funasr", "vad_process": True}, funasr=settings)
    before = {child.pid for child in multiprocessing.active_children()}
    with pytest.raises(ModelUnavailable, match="funasr.offline_model"):
        await CaptionServer(config).startup()
    loop = asyncio.get_running_loop()
    await loop.shutdown_default_executor()  # what loaded beside the engine has finished loading
    await asyncio.sleep(0)  # (and its done-callbacks have run)
    started = [child for child in multiprocessing.active_children() if child.pid not in before]
    assert started == [], started


@pytest.mark.parametrize("spec, says", [("/no/such/model", "no such directory"), ("{empty}", "missing config.yaml")])
def test_bad_local_model_directory_is_named(tiny_funasr, tmp_path, spec, says):
    from inference.engines import create_engine

    spec = spec.replace("{empty}", str(tmp_path))
    settings = funasr_settings(tiny_funasr, online_model=spec)
    with pytest.raises(ModelUnavailable, match=says):
        create_engine(make_config(inference={"engine": "funasr"}, funasr=settings), "cpu")


def start_server_without_hub_models(tmp_path, edit) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the real server on the default config changed by `edit(text)`, with an empty model cache
    and downloads off, until it exits; returns the process and its `error:` lines."""
    from settings.config import DEFAULT_CONFIG_PATH

    text = edit(DEFAULT_CONFIG_PATH.read_text())
    text = text.replace('model_cache_dir = ""', f'model_cache_dir = "{tmp_path}"')
    text = text.replace("allow_download = true", "allow_download = false").replace("port = 10095", "port = 0")
    path = tmp_path / "config.toml"
    path.write_text(text)
    done = subprocess.run(
        [sys.executable, "run_server.py", "--config", str(path), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, [line for line in done.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow  # a server process (run_server.py): no fixture marks it end to end
def test_server_startup_with_a_missing_model_prints_one_line_not_a_traceback(tmp_path):
    done, errors = start_server_without_hub_models(
        tmp_path, lambda text: text.replace('engine = "whisper"', 'engine = "funasr"')
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(errors) == 1 and "paraformer-zh" in errors[0] and str(tmp_path) in errors[0]


def test_vad_model_setting_resolves_to_the_shipped_copy_or_a_directory(tmp_path):
    from inference.loading import vad_model_dir
    from inference.vad_fsmn import FsmnScorer, packaged_model_dir

    config = make_config()
    assert config.funasr.vad_model == "fsmn-vad" and vad_model_dir(config.funasr) is None
    local = make_config(funasr={"vad_model": str(packaged_model_dir())}).funasr
    assert vad_model_dir(local) == str(packaged_model_dir())
    FsmnScorer(vad_model_dir(local))  # loads
    with pytest.raises(ModelUnavailable, match="missing config.yaml"):
        vad_model_dir(make_config(funasr={"vad_model": str(tmp_path)}).funasr)


def test_documented_smoke_command_runs_end_to_end(tiny_funasr, tmp_path, capsys):
    # The same script users run against the real hub models; here pointed at the tiny ones.
    from settings.config import DEFAULT_CONFIG_PATH
    from tests.speech import write_wav
    from tools.funasr_smoke import main

    text = DEFAULT_CONFIG_PATH.read_text()
    defaults = {"offline": "paraformer-zh", "online": "paraformer-zh-streaming", "punc": "ct-punc"}
    for role, default in defaults.items():
        text = text.replace(f'{role}_model = "{default}"', f'{role}_model = "{tiny_funasr[role]}"', 1)
    (tmp_path / "config.toml").write_text(text)
    wav = write_wav(tmp_path / "speech.wav", SCRIPT.audio)
    assert main([str(wav), "--config", str(tmp_path / "config.toml")]) == 0
    out = capsys.readouterr().out
    assert "SeacoParaformer" in out and "offline  (" in out and "streaming (" in out


# --- languages: a code the offline model lacks is refused, never decoded as another language --------
def test_the_languages_a_model_knows_come_from_what_it_is(funasr_engine, tiny_funasr):
    from inference.engines.funasr import vocabulary_languages
    from tests.tiny_funasr import TOKENS

    # The tiny Paraformer spells Chinese characters only (paraformer-zh's vocab8404 also has
    # thousands of English pieces: zh and en); SenseVoice and Fun-ASR-Nano say what they know.
    assert funasr_engine.languages == ("zh",) == vocabulary_languages(TOKENS)
    english = [f"{a}{b}" for a in "abcdefghij" for b in "klmnopqrst"] + ["the@@", "▁of"]
    assert vocabulary_languages(TOKENS + english) == ("en", "zh") and vocabulary_languages(None) is None
    assert funasr_engine.language_problem("zh") is None and funasr_engine.language_problem("auto") is None
    problem = funasr_engine.language_problem("ja")
    assert problem == (
        f"language 'ja' is not one the funasr engine's model ({tiny_funasr['offline']}) knows; it knows 'auto' and zh"
    )
    # Callers without a stream or job start get no text and the reason; the rest of the batch is decoded.
    speech = SCRIPT.audio
    lacking, chinese = funasr_engine.decode([speech, speech], [DecodeOptions(language="ja"), DecodeOptions("zh")])
    assert lacking.text == "" and lacking.extra == {"language": "ja", "dropped": "unsupported_language"}
    assert "dropped" not in chinese.extra


async def test_a_stream_or_job_asking_for_a_language_the_model_lacks_is_refused(start_server, funasr_engine, tmp_path):
    import json

    from tests.speech import write_wav
    from tests.test_jobs import submit
    from tests.wsclient import START, connect, recv, send_audio, start, until_end

    server = start_server(engine=funasr_engine, inference={"engine": "funasr"})
    problem = funasr_engine.language_problem("ja")
    async with await connect(server.url) as ws:  # the same refusal the Whisper engine gives ("yue")
        await ws.send(json.dumps({**START, "language": "ja"}))
        refused = await recv(ws)
        assert refused["type"] == "error" and refused["code"] == "unsupported_language", refused
        assert refused["message"] == problem
        await start(ws, language="zh")  # the connection stays open for a corrected start
        await send_audio(ws, SCRIPT.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        assert (await until_end(ws))[-1]["type"] == "end"
    wav = write_wav(tmp_path / "clip.wav", SCRIPT.audio)
    status, body = await submit(server.http, [wav], {"language": "ja"})
    assert status == 400 and body["code"] == "unsupported_language" and body["error"] == problem, body
    status, body = await submit(server.http, [wav], {"language": "zh"})
    assert status == 201, body


@pytest.mark.slow  # a server process (run_server.py): no fixture marks it end to end
def test_a_server_language_the_model_lacks_stops_startup_with_one_line(tiny_funasr, tmp_path):
    def edit(text: str) -> str:
        text = text.replace('engine = "whisper"', 'engine = "funasr"')
        for key, role in (("offline_model", "offline"), ("online_model", "online"), ("punc_model", "punc")):
            start = text.index(f"{key} = ")
            text = text[:start] + f'{key} = "{tiny_funasr[role]}"' + text[text.index("  ", start) :]
        start = text.index("\n[funasr]\n")
        return text[:start] + text[start:].replace('language = "auto"', 'language = "ja"', 1)

    done, errors = start_server_without_hub_models(tmp_path, edit)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    expected = f"error: funasr.language: language 'ja' is not one the funasr engine's model ({tiny_funasr['offline']})"
    assert len(errors) == 1 and errors[0].startswith(expected) and "knows 'auto' and zh" in errors[0], errors

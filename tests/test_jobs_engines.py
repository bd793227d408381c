"""Per-job engine choice: a server whose live engine is one real engine and whose job engine
(config jobs.engines) is the other. The same file submitted twice is transcribed by the engine each
job names - its text equals that engine's own decode of the same segments - and the job, file and
history rows say so; the OpenAI endpoint and the CLI pick engines the same way; unknown engines are
a clear 400 that changes nothing; a live stream keeps its finals while a job engine works; a job
engine that cannot load stops startup with one line. (The FunASR models are the tiny random ones:
their text is random characters, but exactly the engine's own. The two tests of the decode thread's
policy, live work first and one engine per batch, put a stand-in where Whisper was: see each.)"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tests.conftest import funasr_settings, make_config
from tests.engines import KnownClipsEngine, RecordingEngine
from tests.job_engines import WholePhrasesEngine
from tests.server_thread import ServerThread
from tests.speech import compose, write_wav
from tests.test_funasr_engine import start_server_without_hub_models
from tests.test_jobs import LECTURE, PHRASES, get, submit, wait_done
from tests.wsclient import finals, transcribe, words

# The tables as the first release made them, before engines were recorded.
FIRST_RELEASE_TABLES = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, options TEXT NOT NULL, status TEXT NOT NULL,
                   idempotency_key TEXT UNIQUE, started REAL, finished REAL);
CREATE TABLE files (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                    name TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, status TEXT NOT NULL,
                    duration_s REAL, done_s REAL NOT NULL DEFAULT 0, next_seq INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE TABLE live_sessions (session_id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
                            engine TEXT NOT NULL, options TEXT NOT NULL);
"""
TWO_SEGMENTS = compose([0.3, "good morning everyone", 0.8, "please open the door", 0.5])


@pytest.fixture(scope="module")
def lecture_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("engines") / "lecture.wav", LECTURE.audio)


@pytest.fixture(scope="module")
def whisper_live_funasr_jobs(whisper_engine, scorer, tiny_funasr):
    """Live engine: the embedded Whisper. For files also: FunASR, loaded at startup from [funasr]
    through the engine factory, as a real server does."""
    config = make_config(jobs={"engines": ["funasr"]}, funasr=funasr_settings(tiny_funasr))
    server = ServerThread(config, whisper_engine, scorer).start()
    yield server
    server.stop()


async def direct_transcript(engine, scorer, config, path) -> list[tuple[int, int, str]]:
    """What `engine` makes of a file when called directly: the same VAD segments, each decoded alone,
    with the inverse text normalisation every final gets. (The executor here only scores VAD.)"""
    from inference.engines.base import DecodeOptions
    from inference.executor import InferenceExecutor
    from jobs.segmenter import file_settings, read_audio, segments
    from text.itn import InverseNormalizer

    normalizer = InverseNormalizer()
    vad = InferenceExecutor(engine, scorer, 1, 0, 64)
    await vad.start()
    try:
        found = [event async for event in segments(read_audio(str(path)), file_settings(config), vad)]
    finally:
        await vad.close()
    out = []
    for event in found:
        text = engine.decode([event.audio], [DecodeOptions()])[0].text
        out.append((event.start_ms, event.end_ms, normalizer(text, None)))
    return out


async def job_segments(http: str, job: dict) -> list[tuple[int, int, str]]:
    (file,) = job["files"]
    status, body = await get(http, f"/api/files/{file['id']}/export.json")
    assert status == 200
    return [(round(s["start"] * 1000), round(s["end"] * 1000), s["text"]) for s in body["segments"]]


async def test_the_same_file_as_two_jobs_is_transcribed_by_the_engine_each_names(
    whisper_live_funasr_jobs, whisper_engine, scorer, lecture_wav
):
    server = whisper_live_funasr_jobs
    funasr = server.server.ctx.executor.engines["funasr"]
    status, listed = await get(server.http, "/api/engines")
    assert status == 200 and listed["default"] == "whisper"
    assert [(e["name"], e["model"], e["live"]) for e in listed["engines"]] == [
        ("whisper", whisper_engine.model, True),
        ("funasr", funasr.model, False),
    ]
    assert "streaming" not in funasr.model and funasr.streaming is False  # files need no streaming model

    status, by_funasr = await submit(server.http, [lecture_wav], {"engine": "funasr"})
    assert status == 201 and by_funasr["engine"] == "funasr"
    status, by_default = await submit(server.http, [lecture_wav])  # no engine: the live one
    assert status == 201 and by_default["engine"] == "whisper"
    funasr_job = await wait_done(server.http, by_funasr["job_id"])
    whisper_job = await wait_done(server.http, by_default["job_id"])

    for job, engine in ((funasr_job, funasr), (whisper_job, whisper_engine)):
        assert job["status"] == "done" and job["engine"] == engine.name
        (file,) = job["files"]
        assert (file["engine"], file["model"]) == (engine.name, engine.model)
    got_funasr = await job_segments(server.http, funasr_job)
    got_whisper = await job_segments(server.http, whisper_job)
    expected_funasr = await direct_transcript(funasr, scorer, server.server.config, lecture_wav)
    expected_whisper = await direct_transcript(whisper_engine, scorer, server.server.config, lecture_wav)
    assert len(expected_funasr) == 3 and all(text for _, _, text in expected_funasr)
    assert got_funasr == expected_funasr  # same segments, and exactly FunASR's text for each
    assert [words(t) for _, _, t in got_whisper] == [words(t) for _, _, t in expected_whisper] == PHRASES
    assert [s[:2] for s in got_whisper] == [s[:2] for s in got_funasr]  # one VAD chain for every engine

    # The history says which engine and model produced each file's captions.
    status, found = await get(server.http, "/api/history")
    by_file = {r["source"]: (r["engine"], r["model"]) for r in found["results"] if r["kind"] == "file"}
    assert by_file[str(funasr_job["files"][0]["id"])] == ("funasr", funasr.model)
    assert by_file[str(whisper_job["files"][0]["id"])] == ("whisper", whisper_engine.model)
    status, exported = await get(server.http, f"/api/jobs/{by_funasr['job_id']}/export.json")
    assert exported["metadata"]["engine"] == "funasr"
    status, health = await get(server.http, "/healthz")
    assert health["engine"] == "whisper" and health["job_engines"] == [{"engine": "funasr", "model": funasr.model}]


async def test_unknown_engines_are_a_clear_400_and_change_nothing(whisper_live_funasr_jobs, lecture_wav):
    server = whisper_live_funasr_jobs
    upload_dir = Path(server.server.config.jobs.upload_dir).expanduser()

    def uploads() -> list[str]:
        return sorted(p.name for p in upload_dir.iterdir()) if upload_dir.exists() else []

    status, before = await get(server.http, "/api/jobs")
    uploads_before = uploads()
    for options, says in (
        ({"engine": "paraformer-zh-large"}, "engine 'paraformer-zh-large' is not available"),
        ({"engine": "instant"}, "engine 'instant' is not available"),  # a known engine, not loaded here
        ({"model": "gpt-4o-transcribe"}, "model 'gpt-4o-transcribe' is not available"),
        ({"engine": "funasr", "model": "whisper"}, "engine and model name different engines"),
        ({"engine": 7}, "engine must be the name of an engine"),
    ):
        status, body = await submit(server.http, [lecture_wav], options)
        assert status == 400 and says in body["error"], body
        if "not available" in says:
            assert body["code"] == "unknown_engine"
            assert "whisper (" in body["error"] and "funasr (" in body["error"]  # what there is to choose
    async with aiohttp.ClientSession() as session:  # the same check for a plain form field
        form = aiohttp.FormData()
        form.add_field("file", lecture_wav.read_bytes(), filename="lecture.wav")
        form.add_field("engine", "nope")
        async with session.post(f"{server.http}/api/jobs", data=form) as response:
            assert response.status == 400 and "'nope' is not available" in (await response.json())["error"]
    status, after = await get(server.http, "/api/jobs")
    assert after == before  # no job was made
    assert uploads() == uploads_before  # and no refused upload was left on disk
    # The engine may also be named by its model, as /api/engines spells it.
    funasr = server.server.ctx.executor.engines["funasr"]
    status, created = await submit(server.http, [lecture_wav], {"model": funasr.model})
    assert status == 201 and created["engine"] == "funasr"
    await wait_done(server.http, created["job_id"])


async def test_openai_model_picks_a_loaded_engine_and_models_lists_them(whisper_live_funasr_jobs, scorer, lecture_wav):
    from openai import BadRequestError, OpenAI

    server = whisper_live_funasr_jobs
    funasr = server.server.ctx.executor.engines["funasr"]
    client = OpenAI(base_url=server.http + "/v1", api_key="unused-here", max_retries=0, timeout=120)

    def run():
        models = {m.id: m for m in client.models.list()}
        by_funasr = client.audio.transcriptions.create(model="funasr", file=lecture_wav.open("rb"))
        with pytest.raises(BadRequestError) as refused:
            client.audio.transcriptions.create(model="instant", file=lecture_wav.open("rb"))
        return models, by_funasr, refused.value

    models, by_funasr, refused = await asyncio.get_running_loop().run_in_executor(None, run)
    assert {"whisper-1", "whisper", "funasr"} <= set(models)
    assert models["funasr"].model_extra["description"] == funasr.model
    expected = await direct_transcript(funasr, scorer, server.server.config, lecture_wav)
    assert by_funasr.text == " ".join(text for _, _, text in expected)
    assert "'instant' is not loaded" in str(refused) and "funasr (" in str(refused)


async def test_cli_engine_option_and_engine_list(whisper_live_funasr_jobs, scorer, lecture_wav, tmp_path, capsys):
    from client.jobs import main

    server = whisper_live_funasr_jobs
    funasr = server.server.ctx.executor.engines["funasr"]
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, main, ["--list-engines", "--url", server.http]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith("whisper\t") and "default" in listing[0]
    assert listing[1] == f"funasr\t{funasr.model}"
    argv = [str(lecture_wav), "--engine", "funasr", "--format", "txt", "--url", server.http, "--out", str(tmp_path)]
    assert await loop.run_in_executor(None, main, argv) == 0
    assert "transcribed by funasr" in capsys.readouterr().err
    expected = await direct_transcript(funasr, scorer, server.server.config, lecture_wav)
    assert (tmp_path / "lecture.txt").read_text(encoding="utf-8").splitlines() == [t for _, _, t in expected]
    with pytest.raises(SystemExit, match="'nope' is not available"):
        await loop.run_in_executor(None, main, [str(lecture_wav), "--engine", "nope", "--url", server.http])


class HeldJobEngine(WholePhrasesEngine):
    """Stand-in for a slow job engine: WholePhrasesEngine (it hears LECTURE's phrases, nothing else),
    named "whisper" as the job engine it stands for, whose model calls each take `hold_s` until
    `released` is set, then none: a job stays mid-way while the test needs it to, as a real model's
    would on a long file, and finishes at once after."""

    name = "whisper"

    def __init__(self, hold_s: float):
        super().__init__(WholePhrasesEngine.of(LECTURE).phrases)
        self.hold_s, self.released = hold_s, threading.Event()

    def decode(self, audios, options):
        self.released.wait(self.hold_s)
        return super().decode(audios, options)


async def test_a_live_stream_keeps_its_finals_while_a_job_engine_transcribes(start_instant, funasr_engine, tmp_path):
    # Live: FunASR (tiny, streaming 2pass). Files: a stand-in job engine named "whisper", handed over
    # ready-made. Words are not the point: the live finals are the tiny model's own characters, the
    # same during the job as alone only if each is decoded by FunASR alone, and the job's words show
    # that each of its segments was decoded whole by the job's engine (FunASR writes characters).
    # Real Whisper took 27 s here, decoding the 27 s file.
    job_engine = HeldJobEngine(hold_s=1.0)  # 12 segments, one per call: 12 s before the job could end
    server = start_instant(engine=funasr_engine, job_engines=[job_engine], jobs={"engines": ["whisper"]})
    alone = finals(await transcribe(server.url, TWO_SEGMENTS.audio, mode="2pass"))
    assert len(alone) == 2
    long_talk = write_wav(tmp_path / "long.wav", np.concatenate([LECTURE.audio] * 4))
    status, created = await submit(server.http, [long_talk], {"engine": "whisper"})
    assert status == 201 and created["engine"] == "whisper"
    for _ in range(600):  # until the job engine has committed its first segment
        status, job = await get(server.http, f"/api/jobs/{created['job_id']}")
        if job["files"][0]["segments"]:
            break
        await asyncio.sleep(0.05)
    during = finals(await transcribe(server.url, TWO_SEGMENTS.audio, mode="2pass"))
    status, job = await get(server.http, f"/api/jobs/{created['job_id']}")
    assert job["status"] == "running", "the job finished before the live stream: no overlap to test"
    job_engine.released.set()  # the rest of the job at once
    assert [f["final_text"] for f in during] == [f["final_text"] for f in alone]  # the same finals, all of them
    job = await wait_done(server.http, created["job_id"])
    (file,) = job["files"]
    assert (file["status"], file["engine"], file["model"]) == ("done", "whisper", job_engine.model)
    status, body = await get(server.http, f"/api/files/{file['id']}/export.json")
    heard = [words(s["text"]) for s in body["segments"]]
    assert len(heard) == len(PHRASES) * 4
    # (One word salad was allowed when real Whisper decoded the job: it heard espeak's "good morning
    # everyone" cut 50 samples later as "godmore name have written one", on 1 run in 10. The stand-in
    # hears every whole phrase; a job decoded by the wrong engine matches none.)
    assert sum(h == p for h, p in zip(heard, PHRASES * 4)) >= len(heard) - 1, heard


async def test_batches_never_mix_engines_and_live_work_goes_first(funasr_engine, scorer):
    # The executor's policy: which engine decodes which request, in what order and batches. Words are
    # not the point, so the live engine is a stand-in named "whisper" (KnownClipsEngine: each of this
    # test's clips, exactly, is "Good morning everyone."; any other audio, such as a FunASR request
    # decoded by it, is "<unknown N samples>"). The job engine is the tiny FunASR model, whose text
    # for a clip is its own. (On real Whisper this test took 15 s of its decodes.)
    from inference.engines.base import DecodeOptions
    from inference.executor import InferenceExecutor, UnknownEngine

    calls: list[tuple[str, list[int]]] = []

    class Logged(RecordingEngine):
        def decode(self, audios, options):
            self.gate.wait(30)
            calls.append((self.name, [len(a) for a in audios]))
            return self.inner.decode(audios, options)

    start, end = LECTURE.spans[0]
    clip = LECTURE.audio[start - 4000 : end + 4000]  # a phrase with some silence around it

    def sized(n: int) -> np.ndarray:  # every request is told apart by its length
        return clip[: len(clip) - n]

    sizes = (0, 1, 2, 3, 4, 5, 6, 7, 20, 30)
    whisper = KnownClipsEngine.of([sized(n) for n in sizes], ["Good morning everyone."] * len(sizes))
    whisper.name = "whisper"
    live, other = Logged(whisper), Logged(funasr_engine)
    executor = InferenceExecutor(live, scorer, 3, 0, 64, job_engines=[other])
    await executor.start()
    try:
        live.gate.clear()  # the first job segment holds the decode thread while the queues fill
        first = executor.submit_background(sized(0), DecodeOptions())
        await asyncio.sleep(0.2)
        jobs = [
            executor.submit_background(sized(n), DecodeOptions(), ("funasr", "whisper")[n % 2]) for n in range(1, 8)
        ]
        on_demand = executor.submit_final(executor.new_stream_id(), 0, sized(20), DecodeOptions(), "funasr")
        live_final = executor.submit_final(1, 0, sized(30), DecodeOptions())
        with pytest.raises(UnknownEngine, match="'instant' is not loaded; loaded: whisper, funasr"):
            executor.submit_background(sized(40), DecodeOptions(), "instant")
        live.gate.set()
        results = await asyncio.gather(first, *jobs, on_demand, live_final)
    finally:
        await executor.close()
    size = len(clip)
    assert calls == [
        ("whisper", [size]),  # already running
        ("whisper", [size - 30]),  # the live final first,
        ("funasr", [size - 20]),  # then the file answered at once,
        ("whisper", [size - 1, size - 3, size - 5]),  # then queued job segments, one engine per batch,
        ("funasr", [size - 2, size - 4, size - 6]),  # oldest first
        ("whisper", [size - 7]),
    ]
    engines = ["whisper"] + [("funasr", "whisper")[n % 2] for n in range(1, 8)] + ["funasr", "whisper"]
    assert [r.extra["engine"] for r in results] == engines
    for result, name, n in zip(results, engines, (0, 1, 2, 3, 4, 5, 6, 7, 20, 30)):
        if name == "whisper":
            assert words(result.text) == "good morning everyone"
        else:  # the tiny model's random characters, exactly as it decodes that clip alone
            assert result.text == funasr_engine.decode([sized(n)], [DecodeOptions()])[0].text


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_jobs_for_an_engine_no_longer_loaded_fail_with_the_reason(
    start_server, tmp_path, lecture_wav, backend, request
):
    from jobs.pg_store import PostgresStore
    from jobs.store import Store

    if backend == "sqlite":
        store = Store(tmp_path / "captions.db")  # queued before a restart with other settings
        settings = {"jobs": {"db_path": str(tmp_path / "captions.db")}}
    else:  # queued by a front end that was then stopped; the server below takes its file after the lease
        url = request.getfixturevalue("postgres_url")
        store = PostgresStore(url, lease_s=1)
        settings = {"cluster": {"postgres_url": url, "lease_s": 1}}
    gone, _ = store.create_job([("a.wav", str(lecture_wav), "x")], {}, None, "funasr")
    other, _ = store.create_job([("b.wav", str(lecture_wav), "y")], {}, None, "whisper")
    (skipped,) = [r.id for r in store.pending_files() if r.job_id == gone]
    row = store.claim_file({skipped})
    store.start_file(row.id, 6.0, "whisper", "an older whisper model")
    store.commit_segment(row.id, 0, 0, 900, "good morning everyone", 2.0)
    store.close()
    server = start_server(**settings)
    (file,) = (await wait_done(server.http, gone))["files"]
    assert file["status"] == "failed" and "engine 'funasr' is not loaded" in file["error"]
    assert "jobs.engines" in file["error"]
    (file,) = (await wait_done(server.http, other))["files"]
    assert file["status"] == "failed" and "an older whisper model" in file["error"]  # never two models in one file


def test_an_old_database_gets_the_engine_columns(tmp_path):
    import sqlite3

    from jobs.store import Store

    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(FIRST_RELEASE_TABLES)
    db.execute("INSERT INTO jobs (id, created, options, status) VALUES ('j1', 0, '{}', 'queued')")
    db.execute("INSERT INTO files (job_id, name, path, sha256, status) VALUES ('j1', 'a.wav', '/a.wav', 'x', 'queued')")
    db.commit()
    db.close()
    store = Store(tmp_path / "old.db")
    job = store.job("j1")
    assert job["engine"] is None and job["files"][0]["engine"] is None and job["files"][0]["model"] is None
    store.add_live_final("s1", 0, 0, 500, "hello", "whisper", {}, "whisper-base")
    assert [(r["engine"], r["model"]) for r in store.search("hello")] == [("whisper", "whisper-base")]
    store.close()


@pytest.mark.slow  # a server process (run_server.py): no fixture marks it end to end
def test_a_job_engine_that_cannot_load_stops_startup_with_one_line(tmp_path):
    def edit(text: str) -> str:
        text = text.replace('engine = "whisper" ', 'engine = "instant" ')  # the live engine loads at once
        text = text.replace("engines = []", 'engines = ["funasr"]')
        return text.replace("~/.local/share/livecaption", str(tmp_path))

    done, errors = start_server_without_hub_models(tmp_path, edit)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "serving on" not in done.stderr
    assert len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith("error: jobs.engines lists 'funasr', which cannot be loaded: model 'paraformer-zh'")
    assert "funasr.offline_model" in errors[0] and str(tmp_path) in errors[0]  # the setting, and where it looked


def test_jobs_engines_setting_is_checked():
    from settings import config

    assert config.load().jobs.engines == ()
    assert config.load(None, {"jobs": {"engines": ["funasr"]}}).jobs.engines == ("funasr",)
    for engines, says in ((["nope"], "jobs.engines may list"), (["funasr", "funasr"], "lists an engine twice"),
                          ("funasr", "must be a list")):  # fmt: skip
        with pytest.raises(config.ConfigError, match=says):
            config.load(None, {"jobs": {"engines": engines}})

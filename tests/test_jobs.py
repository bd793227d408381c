"""File transcription jobs over real HTTP on loopback: upload, progress, exports parsed by real
parsers, bad input, live priority, history, a database that stops taking writes, and the
OpenAI-compatible endpoint driven by the official `openai` client.

Real Whisper transcribes where the words are the point: every export compared with the spoken
phrases and their times, the OpenAI endpoint, the CLI's transcripts. The tests of bad input, live
priority, history and backup decode with WholePhrasesEngine (tests/job_engines.py), a stand-in with
no model that hears only this module's phrases, whole (anything else is "<unknown N ms>"): the
words they check still tell each segment and session apart, in milliseconds."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import zipfile

import aiohttp
import numpy as np
import pytest

from tests.job_engines import WholePhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.wsclient import final_words, transcribe, until, words

PHRASES = ["good morning everyone", "please open the door", "thank you very much"]
LECTURE = compose([0.4, "good morning everyone", 0.8, "please open the door", 0.8, "thank you very much", 0.5])


@pytest.fixture
def start_stand_in_server(scorer):
    """conftest's start_server, on a WholePhrasesEngine that hears PHRASES and "hello world"."""
    with servers_on(WholePhrasesEngine.of(LECTURE, compose(["hello world"])), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    wav = write_wav(folder / "lecture.wav", LECTURE.audio)
    stereo = folder / "lecture-44k.flac"  # another container, rate and channel count
    subprocess.run(["sox", str(wav), "-r", "44100", "-c", "2", str(stereo)], check=True)
    corrupt = folder / "broken.mp3"
    corrupt.write_bytes(b"ID3\x03\x00\x00\x00" + bytes(range(256)) * 40)
    return {"wav": wav, "flac": stereo, "corrupt": corrupt}


async def submit(http: str, paths, options=None, headers=None) -> tuple[int, dict]:
    form = aiohttp.FormData()
    for path in paths:
        form.add_field("file", path.read_bytes(), filename=path.name)
    if options is not None:
        form.add_field("options", json.dumps(options))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http}/api/jobs", data=form, headers=headers or {}) as response:
            return response.status, await response.json()


async def get(http: str, path: str):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}{path}") as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(body)
            return response.status, body


async def wait_done(http: str, job_id: str, timeout: float = 180) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, job = await get(http, f"/api/jobs/{job_id}")
        assert status == 200
        if job["status"] in ("done", "failed"):
            return job
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.3)


async def test_uploaded_files_are_transcribed_with_progress_and_every_export_parses(start_server, audio_files):
    import srt
    import webvtt

    server = start_server()
    status, created = await submit(server.http, [audio_files["wav"], audio_files["flac"]], {"language": "en"})
    assert status == 201 and len(created["files"]) == 2
    job = await wait_done(server.http, created["job_id"])
    assert job["status"] == "done" and job["percent"] == 100.0 and job["eta_s"] is None
    assert abs(job["audio_s"] - 2 * len(LECTURE.audio) / 16000) < 0.2
    for file in job["files"]:
        assert file["status"] == "done" and file["segments"] == 3 and file["error"] is None
        status, body = await get(server.http, f"/api/files/{file['id']}/export.srt")
        cues = list(srt.parse(body.decode()))
        assert [words(c.content) for c in cues] == [
            "good morning everyone",
            "please open the door",
            "thank you very much",
        ]
        for cue, (start, end) in zip(cues, LECTURE.spans):
            assert (
                abs(cue.start.total_seconds() - start / 16000) < 0.3
                and abs(cue.end.total_seconds() - end / 16000) < 0.4
            )
        status, body = await get(server.http, f"/api/files/{file['id']}/export.vtt")
        assert [words(c.text) for c in webvtt.from_buffer(io.StringIO(body.decode()))][-1] == "thank you very much"
        status, body = await get(server.http, f"/api/files/{file['id']}/export.json")
        assert [words(s["text"]) for s in body["segments"]][0] == "good morning everyone"
    status, body = await get(server.http, f"/api/jobs/{created['job_id']}/export.csv")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == 6
    status, body = await get(server.http, f"/api/jobs/{created['job_id']}/export.zip")
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert any(n.endswith(".srt") for n in names) and any(n.endswith(".csv") for n in names)


async def test_bad_files_and_requests_get_clear_errors_and_nothing_else_is_affected(
    start_stand_in_server, audio_files, tmp_path
):
    allowed = tmp_path / "recordings"
    allowed.mkdir()
    (allowed / "ok.wav").write_bytes(audio_files["wav"].read_bytes())
    server = start_stand_in_server(jobs={"max_upload_mb": 1, "allowed_dir": str(allowed)})
    # Corrupt file next to a good one: the good one is transcribed, the bad one says why.
    status, created = await submit(server.http, [audio_files["corrupt"], audio_files["wav"]])
    assert status == 201
    job = await wait_done(server.http, created["job_id"])
    broken, good = job["files"]
    assert broken["status"] == "failed" and "broken.mp3" in broken["error"]
    assert good["status"] == "done" and good["segments"] == 3
    # Oversized upload: 413 with the limit named.
    big = tmp_path / "big.wav"
    write_wav(big, np.zeros(16000 * 40, dtype=np.float32))  # 1.28 MB > 1 MB
    status, body = await submit(server.http, [big])
    assert status == 413 and "max_upload_mb" in body["error"]
    # Server-side paths: traversal refused, missing named, a good one accepted.
    async with aiohttp.ClientSession() as session:
        for paths, expected in ((["../../etc/passwd"], 403), (["/etc/passwd"], 403), (["nope.wav"], 404),
                                (["ok.wav"], 201)):  # fmt: skip
            async with session.post(f"{server.http}/api/jobs", json={"paths": paths}) as response:
                assert response.status == expected, paths
                body = await response.json()
                assert ("error" in body) == (expected != 201)
        async with session.post(
            f"{server.http}/api/jobs", data=b"{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400 and "JSON" in (await r.json())["error"]
    status, body = await submit(server.http, [audio_files["wav"]], {"max_segment_s": 99})
    assert status == 400 and "max_segment_s" in body["error"]
    # Duplicates: the same content twice in one job is kept once; a repeated Idempotency-Key is the same job.
    status, first = await submit(
        server.http, [audio_files["wav"], audio_files["wav"]], headers={"Idempotency-Key": "k1"}
    )
    assert status == 201 and len(first["files"]) == 1 and first["duplicates"] == ["lecture.wav"]
    status, again = await submit(server.http, [audio_files["wav"]], headers={"Idempotency-Key": "k1"})
    assert again["job_id"] == first["job_id"]
    # Export names cannot escape: a job id that is a path is just not found.
    status, _ = await get(server.http, "/api/jobs/..%2F..%2Fetc/export.zip")
    assert status == 404
    # Live captions kept working throughout.
    assert (
        final_words(await transcribe(server.url, LECTURE.audio))
        == "good morning everyone please open the door thank you very much"
    )


async def test_live_finals_go_first_while_a_job_fills_the_queue(scorer):
    from inference.engines.base import DecodeOptions
    from inference.executor import InferenceExecutor
    from tests.engines import RecordingEngine

    engine = RecordingEngine(WholePhrasesEngine.of(LECTURE))
    executor = InferenceExecutor(engine, scorer, 2, 0, 64)
    await executor.start()
    try:
        engine.gate.clear()  # hold the model while the queue fills
        clip = LECTURE.audio[: 16000 * 2]
        background = [executor.submit_background(clip, DecodeOptions()) for _ in range(6)]
        await asyncio.sleep(0.2)
        live = executor.submit_final(1, 0, LECTURE.audio[: 16000 * 2 + 123], DecodeOptions())
        engine.gate.set()
        await asyncio.gather(live, *background)
    finally:
        await executor.close()
    live_call = next(i for i, call in enumerate(engine.calls) if 16000 * 2 + 123 in call)
    assert live_call <= 1  # at most the batch already running went before it
    assert all(len(call) <= 2 for call in engine.calls)


async def test_live_sessions_land_in_searchable_history_even_after_the_database_failed(start_stand_in_server):
    server = start_stand_in_server()
    jobs = server.server.ctx.jobs
    jobs.store.db.execute("PRAGMA query_only = ON")  # injected fault: the database refuses writes
    replies = await transcribe(server.url, LECTURE.audio, session_id="hist-1")
    assert final_words(replies) == "good morning everyone please open the door thank you very much"  # live goes on
    await asyncio.sleep(0.5)
    status, health = await get(server.http, "/healthz")
    assert health["status"] == "degraded" and health["history"]["ok"] is False
    assert "readonly" in health["history"]["error"].replace("-", "").replace(" ", "")
    jobs.store.db.execute("PRAGMA query_only = OFF")
    await transcribe(server.url, compose([0.3, "hello world", 0.5]).audio, session_id="hist-2")

    async def history_ok() -> bool:  # failed writes are retried every few seconds, then it says ok
        return (await get(server.http, "/healthz"))[1]["history"]["ok"] is True

    await until(history_ok, timeout=30)
    status, found = await get(server.http, "/api/history?q=hello")
    assert [r["source"] for r in found["results"]] == ["hist-2"]
    status, body = await get(server.http, "/api/sessions/hist-2/export.txt")
    assert words(body.decode()) == "hello world"
    async with aiohttp.ClientSession() as session:
        async with session.delete(f"{server.http}/api/sessions/hist-2") as response:
            assert response.status == 200
    assert (await get(server.http, "/api/history?q=hello"))[1]["results"] == []


async def test_backup_copies_the_database_while_the_server_runs(start_stand_in_server, tmp_path):
    import sqlite3
    import sys

    server = start_stand_in_server()
    await transcribe(server.url, compose([0.3, "hello world", 0.5]).audio, session_id="backed-up")
    await asyncio.sleep(0.5)
    config = tmp_path / "config.toml"
    from settings.config import DEFAULT_CONFIG_PATH

    text = DEFAULT_CONFIG_PATH.read_text().replace(
        'db_path = "~/.local/share/livecaption/captions.db"', f'db_path = "{server.server.config.jobs.db_path}"'
    )
    config.write_text(text)
    done = subprocess.run([sys.executable, "-m", "jobs.backup", str(tmp_path / "copy.db"), "--config", str(config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = sqlite3.connect(tmp_path / "copy.db").execute("SELECT text FROM live_finals").fetchall()
    assert [words(r[0]) for r in rows] == ["hello world"]


async def test_openai_client_transcribes_against_the_server(start_server, audio_files):
    import srt
    from openai import OpenAI

    server = start_server()
    client = OpenAI(base_url=server.http + "/v1", api_key="unused-here", max_retries=0, timeout=120)

    def run():
        plain = client.audio.transcriptions.create(model="whisper-1", file=audio_files["flac"].open("rb"))
        verbose = client.audio.transcriptions.create(
            model="whisper-1", file=audio_files["wav"].open("rb"), response_format="verbose_json", language="en",
            temperature=0.0,
        )  # fmt: skip
        subtitles = client.audio.transcriptions.create(
            model="whisper-1", file=audio_files["wav"].open("rb"), response_format="srt"
        )
        models = [m.id for m in client.models.list()]
        return plain, verbose, subtitles, models

    plain, verbose, subtitles, models = await asyncio.get_running_loop().run_in_executor(None, run)
    assert words(plain.text) == "good morning everyone please open the door thank you very much"
    assert [words(s.text) for s in verbose.segments] == [
        "good morning everyone", "please open the door", "thank you very much"
    ]  # fmt: skip
    assert abs(verbose.segments[1].start - LECTURE.spans[1][0] / 16000) < 0.3
    assert len(list(srt.parse(subtitles))) == 3
    assert "whisper-1" in models

    def bad():
        from openai import BadRequestError

        with pytest.raises(BadRequestError) as caught:
            client.audio.transcriptions.create(model="whisper-1", file=audio_files["corrupt"].open("rb"))
        return caught.value

    error = await asyncio.get_running_loop().run_in_executor(None, bad)
    assert "broken.mp3" in str(error)


async def test_cli_uploads_follows_with_progress_bars_and_writes_transcripts(
    start_server, audio_files, tmp_path, capsys
):
    import srt

    from client.jobs import main

    server = start_server()
    argv = [str(audio_files["wav"]), str(audio_files["corrupt"]), "--url", server.http, "--out", str(tmp_path)]
    code = await asyncio.get_running_loop().run_in_executor(None, main, argv)
    assert code == 1  # one file failed, and the exit code says so
    cues = list(srt.parse((tmp_path / "lecture.srt").read_text()))
    assert [words(c.content) for c in cues] == PHRASES
    err = capsys.readouterr().err
    assert "100%" in err and "broken.mp3" in err  # tqdm bars, and the failed file named


async def test_a_client_that_vanishes_mid_segment_still_gets_that_segment_into_history(start_stand_in_server):
    from tests.wsclient import connect, send_audio, start

    server = start_stand_in_server()
    async with await connect(server.url) as ws:
        await start(ws, session_id="vanished")
        await send_audio(ws, compose([0.3, "thank you very much"]).audio)  # no trailing silence: open segment
        await asyncio.sleep(0.5)
        ws.transport.abort()
    for _ in range(100):
        status, found = await get(server.http, "/api/history?q=thank")
        if found["results"]:
            break
        await asyncio.sleep(0.2)
    assert [(r["source"], words(r["text"])) for r in found["results"]] == [("vanished", "thank you very much")]


def test_the_stand_in_hears_only_whole_known_phrases():
    """WholePhrasesEngine, which the policy tests here and in test_jobs_limits decode with: the known
    phrases found whole in a segment's own audio, in the order spoken; any other audio never gets a
    known text, so a segment cut in the wrong place or decoded for the wrong request shows."""
    from inference.engines.base import DecodeOptions
    from tests.speech import to_pcm16

    engine = WholePhrasesEngine.of(LECTURE)
    audio = LECTURE.audio
    (_, first_end), (second_start, second_end), _ = LECTURE.spans
    carried = np.frombuffer(to_pcm16(audio), dtype="<i2").astype(np.float32) / 32768  # as a wav, FLAC or PCM
    heard = [
        (audio, DecodeOptions()),
        (carried, DecodeOptions()),
        (audio[second_start - 4000 : second_end + 4000], DecodeOptions()),
        (audio, DecodeOptions(context_samples=first_end, after_samples=len(audio) - second_end)),
        (audio, DecodeOptions(context_samples=second_start + 1)),  # the second phrase is not whole
    ]
    unheard = [
        audio[: first_end - 160],  # the first phrase, its last 10 ms cut
        np.zeros(16000, dtype=np.float32),
        compose([0.3, "please open the door"], rate_wpm=170).audio,  # spoken otherwise
        audio * 0.5,  # quieter: not the same samples
    ]
    results = engine.decode([a for a, _ in heard] + unheard, [o for _, o in heard] + [DecodeOptions()] * len(unheard))
    assert [r.text for r in results[: len(heard)]] == [
        " ".join(PHRASES), " ".join(PHRASES), PHRASES[1], PHRASES[1], PHRASES[2]
    ]  # fmt: skip
    assert [r.text for r in results[len(heard) :]] == [f"<unknown {round(len(a) / 16)} ms>" for a in unheard]
    assert engine.calls == [[len(a) for a, _ in heard] + [len(a) for a in unheard]]

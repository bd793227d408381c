"""File jobs and history against greedy and hostile clients (issue 15), over real HTTP on loopback
with a real SQLite file: a per-file audio limit counted while decoding, cancel (API, CLI, delete)
that no restart undoes, jobs and history that belong to their token, no orphaned uploads, a reused
Idempotency-Key that must match, live history writes kept and retried, exports that keep files of
one name, a corrupt or foreign database at startup, indexed search off the writer's thread, and
names escaped in the log.

What is tested here is policy, not recognition: the servers decode with WholePhrasesEngine
(tests/job_engines.py), a stand-in with no model that hears only this module's phrases, whole
(anything else is "<unknown N ms>"), so the words still tell each segment, session and file apart.
Real Whisper decodes the file jobs of tests/test_jobs.py whose words are the point."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import sqlite3
import threading
import zipfile
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import websockets

from tests.job_engines import WholePhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.test_media import write_mka_that_says_it_lasts, write_pcm_wav
from tests.wsclient import final_words, send_audio, start, transcribe, until_end, words

LECTURE = compose([0.4, "good morning everyone", 0.8, "please open the door", 0.8, "thank you very much", 0.5])
HELLO = compose([0.3, "hello world", 0.5])
TOKEN_A, TOKEN_B, ADMIN = "token-a-0123456789abcdef", "token-b-0123456789abcdef", "admin-0123456789abcdef"
FINISHED = ("done", "failed", "cancelled")


@pytest.fixture
def start_stand_in_server(scorer):
    """conftest's start_server, on a WholePhrasesEngine that hears LECTURE's and HELLO's phrases."""
    with servers_on(WholePhrasesEngine.of(LECTURE, HELLO), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def lecture_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("limits") / "lecture.wav", LECTURE.audio)


@pytest.fixture(scope="module")
def hello_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("limits") / "hello.wav", HELLO.audio)


async def call(http: str, method: str, path: str, token: str | None = None, **kwargs) -> tuple[int, object]:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{http}{path}", headers=headers, **kwargs) as response:
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(body)
            return response.status, body


async def submit(http: str, files: list[tuple[str, bytes]], token: str | None = None, headers=None, options=None):
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field("file", data, filename=name)
    if options is not None:
        form.add_field("options", json.dumps(options))
    return await call(http, "POST", "/api/jobs", token, data=form, headers=headers or {})


async def wait_for(http: str, job_id: str, statuses, token: str | None = None, timeout: float = 120) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status, job = await call(http, "GET", f"/api/jobs/{job_id}", token)
        assert status == 200, job
        if job["status"] in statuses:
            return job
        assert loop.time() < deadline, job
        await asyncio.sleep(0.2)


def upload_files(server) -> list[Path]:
    return sorted(p for p in Path(server.server.config.jobs.upload_dir).rglob("*") if p.is_file())


# --- H3: the audio limit, cancel ------------------------------------------------------------------
async def test_files_past_the_audio_limit_fail_alone_with_the_setting_named(start_stand_in_server, hello_wav, tmp_path):
    server = start_stand_in_server(jobs={"max_file_audio_s": 3})
    one_hertz = write_pcm_wav(tmp_path / "one-hertz.wav", 1, np.random.default_rng(0).integers(-3000, 3000, 50_000))
    liar = write_mka_that_says_it_lasts(tmp_path / "liar.mka", LECTURE.audio, said_s=1.0)  # 6 s inside
    files = [(p.name, p.read_bytes()) for p in (one_hertz, liar, hello_wav)]
    status, created = await submit(server.http, files)
    assert status == 201
    job = await wait_for(server.http, created["job_id"], FINISHED)
    by_name = {f["name"]: f for f in job["files"]}
    # 100 KB that would decode to 13.9 hours: refused before any decoding, with the reason.
    assert by_name["one-hertz.wav"]["status"] == "failed"
    assert by_name["one-hertz.wav"]["error"] == (
        "one-hertz.wav: is longer than 3 s, the most one file may last (jobs.max_file_audio_s)"
    )
    # A header that says 1 s is not believed: decoding stops at the limit, what came before is kept.
    assert by_name["liar.mka"]["status"] == "failed" and "jobs.max_file_audio_s" in by_name["liar.mka"]["error"]
    status, body = await call(server.http, "GET", f"/api/files/{by_name['liar.mka']['id']}/export.txt")
    assert words(body.decode()) == "good morning everyone"
    assert by_name["hello.wav"]["status"] == "done" and by_name["hello.wav"]["segments"] == 1
    status, health = await call(server.http, "GET", "/healthz")
    assert health["status"] == "ok"


async def test_cancel_stops_a_running_job_for_good_and_delete_cancels_first(
    start_stand_in_server, lecture_wav, hello_wav, tmp_path, capsys
):
    from client.jobs import main
    from tests.engines import RecordingEngine

    engine = RecordingEngine(WholePhrasesEngine.of(LECTURE, HELLO))
    db_path = str(tmp_path / "captions.db")
    server = start_stand_in_server(engine=engine, jobs={"db_path": db_path})
    loop = asyncio.get_running_loop()
    engine.gate.clear()  # the model holds every decode: jobs stay running until cancelled
    try:
        status, first = await submit(server.http, [("lecture.wav", lecture_wav.read_bytes())])
        await wait_for(server.http, first["job_id"], ("running",))
        status, job = await call(server.http, "POST", f"/api/jobs/{first['job_id']}/cancel")
        assert status == 200 and job["status"] == "cancelled"
        assert [f["status"] for f in job["files"]] == ["cancelled"]
        status, again = await call(server.http, "POST", f"/api/jobs/{first['job_id']}/cancel")
        assert status == 200 and again["status"] == "cancelled"  # cancelling twice is no error

        # The CLI cancels too.
        status, second = await submit(server.http, [("hello.wav", hello_wav.read_bytes())])
        await wait_for(server.http, second["job_id"], ("running",))
        code = await loop.run_in_executor(None, main, ["--cancel", second["job_id"], "--url", server.http])
        assert code == 0 and f"job {second['job_id']} cancelled" in capsys.readouterr().out
        assert (await call(server.http, "GET", f"/api/jobs/{second['job_id']}"))[1]["status"] == "cancelled"

        # Deleting a running job cancels it, then removes it and its upload.
        other = compose([0.3, "thank you very much", 0.5]).audio
        status, third = await submit(server.http, [("third.wav", write_wav(tmp_path / "t.wav", other).read_bytes())])
        await wait_for(server.http, third["job_id"], ("running",))
        assert len(upload_files(server)) == 3
        status, body = await call(server.http, "DELETE", f"/api/jobs/{third['job_id']}")
        assert status == 200 and body == {"deleted": third["job_id"]}
        assert (await call(server.http, "GET", f"/api/jobs/{third['job_id']}"))[0] == 404
        assert len(upload_files(server)) == 2
    finally:
        engine.gate.set()
    await asyncio.sleep(1.0)  # decodes that were held are let go: none of them is committed
    for job_id in (first["job_id"], second["job_id"]):
        job = (await call(server.http, "GET", f"/api/jobs/{job_id}"))[1]
        assert job["status"] == "cancelled" and job["files"][0]["segments"] == 0
    status, finished = await submit(server.http, [("again.wav", write_wav(tmp_path / "a.wav", other).read_bytes())])
    await wait_for(server.http, finished["job_id"], ("done",))
    status, body = await call(server.http, "POST", f"/api/jobs/{finished['job_id']}/cancel")
    assert status == 409 and "already finished" in body["error"]
    server.stop()

    # A restart on the same database resumes nothing that was cancelled.
    restarted = start_stand_in_server(jobs={"db_path": db_path})
    await asyncio.sleep(2.0)
    for job_id in (first["job_id"], second["job_id"]):
        job = (await call(restarted.http, "GET", f"/api/jobs/{job_id}"))[1]
        assert job["status"] == "cancelled" and [f["status"] for f in job["files"]] == ["cancelled"]
        assert job["files"][0]["segments"] == 0
    assert not restarted.server.ctx.jobs.active


# --- M1: whose data -------------------------------------------------------------------------------
async def stream_with_token(url: str, token: str, session_id: str, audio: np.ndarray) -> list[dict]:
    async with websockets.connect(f"{url}/?token={token}", subprotocols=["binary"], ping_interval=None) as ws:
        await start(ws, session_id=session_id)
        await send_audio(ws, audio)
        await ws.send(json.dumps({"is_speaking": False}))
        return await until_end(ws)


async def test_jobs_and_history_belong_to_the_token_that_made_them(start_stand_in_server, lecture_wav):
    server = start_stand_in_server(auth={"tokens": [TOKEN_A, TOKEN_B], "admin_tokens": [ADMIN]})
    http = server.http
    status, created = await submit(http, [("lecture.wav", lecture_wav.read_bytes())], TOKEN_A)
    assert status == 201
    job_id = created["job_id"]
    file_id = created["files"][0]["id"]
    job = await wait_for(http, job_id, FINISHED, TOKEN_A)
    assert job["status"] == "done"
    replies = await stream_with_token(server.url, TOKEN_A, "a-meeting", HELLO.audio)
    assert final_words(replies) == "hello world"
    for _ in range(50):
        if (await call(http, "GET", "/api/history?q=hello", TOKEN_A))[1]["results"]:
            break
        await asyncio.sleep(0.1)

    # Another token sees none of it, and can change none of it.
    assert (await call(http, "GET", "/api/jobs", TOKEN_B))[1]["jobs"] == []
    for method, path in (
        ("GET", f"/api/jobs/{job_id}"),
        ("GET", f"/api/jobs/{job_id}/export.zip"),
        ("GET", f"/api/jobs/{job_id}/export.csv"),
        ("GET", f"/api/files/{file_id}/export.srt"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("DELETE", f"/api/jobs/{job_id}"),
        ("GET", "/api/sessions/a-meeting/export.txt"),
        ("DELETE", "/api/sessions/a-meeting"),
    ):
        status, body = await call(http, method, path, TOKEN_B)
        assert status == 404, (method, path, body)
    for query in ("hello", "morning", ""):
        assert (await call(http, "GET", f"/api/history?q={query}", TOKEN_B))[1]["results"] == []

    # Its owner and the admin see everything.
    for token in (TOKEN_A, ADMIN):
        assert [j["id"] for j in (await call(http, "GET", "/api/jobs", token))[1]["jobs"]] == [job_id]
        found = (await call(http, "GET", "/api/history?q=hello", token))[1]["results"]
        assert [(r["kind"], r["source"]) for r in found] == [("live", "a-meeting")]
        found = (await call(http, "GET", "/api/history?q=morning", token))[1]["results"]
        assert [(r["kind"], r["source"]) for r in found] == [("file", str(file_id))]
        status, body = await call(http, "GET", "/api/sessions/a-meeting/export.txt", token)
        assert status == 200 and words(body.decode()) == "hello world"
    # The database names owners by a digest, never by the token.
    database = sqlite3.connect(server.server.config.jobs.db_path)
    owners = {row[0] for row in database.execute("SELECT owner FROM jobs UNION SELECT owner FROM live_sessions")}
    database.close()
    assert len(owners) == 1 and not any(t in o for o in owners for t in (TOKEN_A, TOKEN_B, ADMIN))
    assert (await call(http, "DELETE", "/api/sessions/a-meeting", TOKEN_A))[0] == 200
    assert (await call(http, "DELETE", f"/api/jobs/{job_id}", ADMIN))[0] == 200


# --- L4, M5, L3 and hostile requests ----------------------------------------------------------------
async def test_no_upload_is_left_behind_and_a_reused_key_must_match(start_stand_in_server, lecture_wav, hello_wav):
    server = start_stand_in_server()
    store = server.server.ctx.jobs.store
    lecture, hello = ("lecture.wav", lecture_wav.read_bytes()), ("hello.wav", hello_wav.read_bytes())
    store.db.execute("PRAGMA query_only = ON")  # injected fault: the database refuses writes
    try:
        status, body = await submit(server.http, [lecture])
    finally:
        store.db.execute("PRAGMA query_only = OFF")
    assert status == 503 and body["code"] == "unavailable"
    assert upload_files(server) == []  # the upload went with the failed request

    key = {"Idempotency-Key": "batch-7"}
    status, first = await submit(server.http, [lecture], headers=key)
    assert status == 201 and len(upload_files(server)) == 1
    status, again = await submit(server.http, [lecture], headers=key)  # a retry of the same request
    assert status == 201 and again["job_id"] == first["job_id"]
    status, twice = await submit(server.http, [lecture, lecture], headers=key)  # the same job, one copy kept
    assert status == 201 and twice["job_id"] == first["job_id"] and twice["duplicates"] == ["lecture.wav"]
    for files, options in (([hello], None), ([lecture], {"language": "fr"})):
        status, body = await submit(server.http, files, headers=key, options=options)
        assert status == 422 and body["code"] == "idempotency_conflict", body
    assert len(upload_files(server)) == 1  # neither the repeat nor the conflicts left a file behind

    # Hostile ids and queries: 4xx, never a 500.
    for method, path, expected in (
        ("GET", "/api/files/" + "9" * 30 + "/export.txt", 404),
        ("GET", "/api/jobs/" + "x" * 300, 404),
        ("GET", "/api/history?since=nan", 400),
        ("GET", "/api/history?q=%22%2A%20NEAR(x%20OR", 200),
        ("GET", "/api/history?q=%00", 200),
    ):
        status, body = await call(server.http, method, path)
        assert status == expected, (path, body)
    status, body = await call(
        server.http, "POST", "/api/jobs", data=b"--XX\r\nContent-Disposition: form-data; name=\"file\"; "
        b"filename=\"a\x1b[31m.wav\"\r\n\r\nabc\r\n--XX--\r\n",
        headers={"Content-Type": "multipart/form-data; boundary=XX"},
    )  # fmt: skip
    assert status == 400 and "malformed" in body["error"]
    form = aiohttp.FormData()
    form.add_field("file", hello[1], filename="hello.wav")
    form.add_field("options", "x" * 200_000)  # a greedy field: refused without being held in memory
    status, body = await call(server.http, "POST", "/api/jobs", data=form)
    assert status == 400 and "longer than 100000 bytes" in body["error"]
    assert len(upload_files(server)) == 1


async def test_exports_keep_every_file_that_shares_a_name(
    start_stand_in_server, lecture_wav, hello_wav, tmp_path, capsys
):
    from client.jobs import main

    server = start_stand_in_server()
    status, created = await submit(server.http, [("talk.wav", lecture_wav.read_bytes()),
                                                 ("talk.wav", hello_wav.read_bytes())])  # fmt: skip
    assert status == 201 and len(created["files"]) == 2
    await wait_for(server.http, created["job_id"], ("done",))
    status, body = await call(server.http, "GET", f"/api/jobs/{created['job_id']}/export.zip")
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert {"talk.txt", "talk (2).txt"} <= set(archive.namelist())
    assert words(archive.read("talk (2).txt").decode()) == "hello world"
    status, body = await call(server.http, "GET", f"/api/jobs/{created['job_id']}/export.csv")
    assert {r["file"] for r in csv.DictReader(io.StringIO(body.decode("utf-8-sig")))} == {"talk.wav", "talk (2).wav"}
    status, body = await call(server.http, "GET", f"/api/jobs/{created['job_id']}/export.json")
    assert [f["file"] for f in body["files"]] == ["talk.wav", "talk (2).wav"]
    # The CLI's downloads keep both too.
    argv = ["--job", created["job_id"], "--url", server.http, "--out", str(tmp_path), "--format", "txt"]
    assert await asyncio.get_running_loop().run_in_executor(None, main, argv) == 0
    assert words((tmp_path / "talk (2).txt").read_text()) == "hello world"
    assert words((tmp_path / "talk.txt").read_text()).startswith("good morning")


async def test_uploaded_names_are_escaped_in_the_log(start_stand_in_server, hello_wav, caplog):
    server = start_stand_in_server()
    hostile = "evil%0D%0A2026-01-01%20INFO%20jobs.runner%3A%20forged%1B%5B31m.wav"  # CR LF, then an ANSI colour
    body = (
        b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''" + hostile.encode() + b"\r\n"
        b"Content-Type: audio/wav\r\n\r\n" + hello_wav.read_bytes() + b"\r\n--XX--\r\n"
    )
    with caplog.at_level(logging.INFO):
        status, created = await call(server.http, "POST", "/api/jobs", data=body,
                                     headers={"Content-Type": "multipart/form-data; boundary=XX"})  # fmt: skip
        assert status == 201 and created["files"][0]["name"].startswith("evil\r\n")  # kept as sent, for the user
        await wait_for(server.http, created["job_id"], ("done",))
    lines = [record.getMessage() for record in caplog.records]
    assert any("forged" in line for line in lines)  # the name is logged...
    for line in lines:
        assert not any(c in line for c in "\r\n\x1b"), line  # ...escaped


# --- L4: history writes, L5: the database at startup, L8: search ---------------------------------
async def test_live_history_that_failed_is_kept_and_retried_and_health_waits_for_it(start_stand_in_server):
    server = start_stand_in_server()
    store = server.server.ctx.jobs.store
    store.db.execute("PRAGMA query_only = ON")  # the database refuses writes
    replies = await transcribe(server.url, LECTURE.audio, session_id="kept-1")
    assert final_words(replies) == "good morning everyone please open the door thank you very much"
    await asyncio.sleep(0.5)
    status, health = await call(server.http, "GET", "/healthz")
    assert health["status"] == "degraded" and "live final(s) waiting" in health["history"]["error"]
    assert (await call(server.http, "GET", "/api/history?q=morning"))[0] == 200  # a read going through...
    status, health = await call(server.http, "GET", "/healthz")
    assert health["status"] == "degraded"  # ...is no sign that writes do
    store.db.execute("PRAGMA query_only = OFF")
    for _ in range(100):
        status, health = await call(server.http, "GET", "/healthz")
        if health["status"] == "ok":
            break
        await asyncio.sleep(0.1)
    assert health["status"] == "ok" and health["history"]["error"] is None
    found = (await call(server.http, "GET", "/api/history?q=open the door"))[1]["results"]
    assert [(r["source"], words(r["text"])) for r in found] == [("kept-1", "please open the door")]
    status, body = await call(server.http, "GET", "/api/sessions/kept-1/export.txt")
    assert words(body.decode()) == "good morning everyone please open the door thank you very much"


@pytest.mark.slow  # a server process (run_server.py): no fixture marks it end to end
def test_a_corrupt_or_foreign_database_stops_startup_with_one_line(tmp_path):
    from tests.test_funasr_engine import start_server_without_hub_models

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    foreign = tmp_path / "foreign.db"
    database = sqlite3.connect(foreign)
    database.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")  # another program's jobs
    database.commit()
    database.close()
    for path in (corrupt, foreign):

        def edit(text: str, path=path) -> str:
            text = text.replace('engine = "whisper" ', 'engine = "instant" ')  # the live engine loads at once
            return text.replace('db_path = "~/.local/share/livecaption/captions.db"', f'db_path = "{path}"')

        done, errors = start_server_without_hub_models(tmp_path, edit)
        assert done.returncode == 1, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "serving on" not in done.stderr
        assert len(errors) == 1, done.stderr[-2000:]
        assert str(path) in errors[0] and "jobs.db_path" in errors[0], errors[0]
        assert "grammars loaded" not in done.stderr  # said before models and grammars load, not after
    assert "its table 'jobs' has no column" in errors[0]
    database = sqlite3.connect(foreign)
    assert [r[0] for r in database.execute("SELECT name FROM sqlite_master")] == ["jobs"]  # left as it was
    database.close()


def test_search_is_indexed_for_any_script_and_old_databases_are_indexed_on_open(tmp_path):
    from jobs.store import SearchTimeout, Store
    from tests.test_jobs_engines import FIRST_RELEASE_TABLES

    path = tmp_path / "old.db"
    database = sqlite3.connect(path)  # a database from before search was indexed and rows had owners
    database.executescript(FIRST_RELEASE_TABLES)
    database.executescript(
        "CREATE TABLE live_finals (session_id TEXT NOT NULL REFERENCES live_sessions(session_id) ON DELETE CASCADE,"
        " segment_id INTEGER NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, text TEXT NOT NULL,"
        " created REAL NOT NULL, PRIMARY KEY (session_id, segment_id));"
        "INSERT INTO live_sessions (session_id, created, updated, engine, options) VALUES ('old', 1, 1, 'w', '{}');"
        "INSERT INTO live_finals VALUES ('old', 0, 0, 900, '今天下午开会讨论项目进度', 1);"
    )
    database.close()
    store = Store(path)
    store.add_live_final("new", 0, 0, 500, "Quarterly REVIEW of the budget", "w", {}, owner="owner-1")
    store.add_live_final("new", 1, 500, 900, '会议 50% 完成 "quoted" NEAR(x) *', "w", {}, owner="owner-1")

    def found(text, owner=None):
        return [(r["source"], r["seq"]) for r in store.search(text, owner=owner)]

    assert found("开会讨论") == [("old", 0)]  # indexed on open
    assert found("开会") == [("old", 0)] and found("会") == [("new", 1), ("old", 0)]  # short: still found
    assert found("quarterly review") == [("new", 0)]  # any case, across words
    assert found("50% 完") == [("new", 1)] and found('"quoted" NEAR(x) *') == [("new", 1)]  # no query syntax
    assert found("budget", owner="owner-2") == [] and found("开会", owner="owner-1") == []  # old rows: anonymous
    assert found("开会", owner="anonymous") == [("old", 0)]
    plan = " ".join(
        str(row[-1]) for row in store.reader.execute(
            "EXPLAIN QUERY PLAN SELECT rowid FROM live_finals_fts x WHERE x.text MATCH '\"review\"'"
        )
    )  # fmt: skip
    assert "VIRTUAL TABLE INDEX" in plan
    assert store.delete_session("new", owner="owner-2") is False and store.delete_session("new", owner="owner-1")
    assert found("budget") == []  # deleted rows leave the index with them
    store.db.execute("INSERT INTO live_finals_fts(live_finals_fts) VALUES ('integrity-check')")
    # A search that runs past its time is stopped, and the next one runs as usual.
    store.add_live_finals([("big", i, 0, 1, f"caption number {i}", "w", {}, None, "owner-1") for i in range(3000)])
    with pytest.raises(SearchTimeout, match="longer than 0 s"):
        store.search("zz", timeout_s=0)
    assert found("number 2999") == [("big", 2999)]
    store.close()


async def test_a_search_never_waits_for_the_database_writer(start_stand_in_server):
    server = start_stand_in_server()
    await transcribe(server.url, HELLO.audio, session_id="searchable")
    runner = server.server.ctx.jobs
    for _ in range(50):
        if (await call(server.http, "GET", "/api/history?q=hello"))[1]["results"]:
            break
        await asyncio.sleep(0.1)
    release = threading.Event()
    held = asyncio.run_coroutine_threadsafe(runner.db(release.wait, 30), server.loop)  # the writer is busy
    try:
        found = await asyncio.wait_for(call(server.http, "GET", "/api/history?q=hello"), 5)
        assert [r["source"] for r in found[1]["results"]] == ["searchable"]
    finally:
        release.set()
        held.result(10)


def test_max_file_audio_s_is_checked():
    from settings import config

    assert config.load().jobs.max_file_audio_s == 14400
    for value, says in ((0, "must be between 1 and 604800"), ("1h", "must be a number"), (True, "must be a number")):
        with pytest.raises(config.ConfigError, match=f"jobs.max_file_audio_s {says}"):
            config.load(None, {"jobs": {"max_file_audio_s": value}})

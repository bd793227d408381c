"""Servers on PostgreSQL. Two real front ends (run_server.py processes) sharing one PostgreSQL and
one upload folder: a job's file is transcribed on one of them, that one is killed with SIGKILL
mid-file, and the other finishes it once the lease has run out; every segment is stored once, in
order, with the words a single uninterrupted run gives. And a PostgreSQL restart under live
captions: they go on, /healthz says degraded, and every final lands once it is back.

The front ends hear through WholePhrasesEngine (tests/stand_in_server.py), a stand-in for the model:
the point is the processes and their leases, and its words only tell the segments apart; its
`decode_s` keeps a file far from done when its front end is killed or its job cancelled."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import psycopg
import srt

from tests.job_engines import WholePhrasesEngine
from tests.speech import compose, write_wav
from tests.test_jobs import LECTURE, get, submit, wait_done
from tests.test_jobs_resume import PHRASES, status_of
from tests.test_lifecycle import ServerProcess
from tests.wsclient import final_words, transcribe, until, words


def write_talk(tmp_path, repeats: int):
    """PHRASES said `repeats` times with pauses: a file long enough to be cut off mid-way."""
    parts: list = [0.3]
    for phrase in PHRASES * repeats:
        parts += [phrase, 0.7]
    return write_wav(tmp_path / "talk.wav", compose(parts).audio)


def hears_phrases(decode_s: float) -> WholePhrasesEngine:
    """The stand-in for the front ends: it hears PHRASES; `decode_s` a model call (one file segment)."""
    return WholePhrasesEngine.of(compose(PHRASES), decode_s=decode_s)


async def submit_file(port: int, path) -> str:
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/api/jobs", data=form) as response:
            assert response.status == 201
            return (await response.json())["job_id"]


def two_front_ends(tmp_path, postgres_url: str, hears: WholePhrasesEngine) -> list[ServerProcess]:
    """Two run_server.py processes on one PostgreSQL, hearing through `hears`. Same tmp_path: the
    same upload folder (the shared volume) and the same settings for both."""
    settings = {"postgres_url": f'"{postgres_url}"', "lease_s": "2"}
    return [ServerProcess(tmp_path, stand_in=hears, **settings) for _ in range(2)]


async def segments_committed(port: int, job_id: str, at_least: int) -> dict:
    """The job, once `at_least` of its segments are committed (any front end answers)."""
    for _ in range(600):
        job = await status_of(f"http://127.0.0.1:{port}", job_id)
        if sum(f["segments"] for f in job["files"]) >= at_least:
            break
        await asyncio.sleep(0.1)
    return job


def lease_holder(postgres_url: str, file_id: int, front_ends: list[ServerProcess]) -> ServerProcess:
    """The front end transcribing the file (its lease names the process)."""
    with psycopg.connect(postgres_url) as db:
        (holder,) = db.execute("SELECT lease_owner FROM files WHERE id = %s", (file_id,)).fetchone()
    pids = [server.proc.pid for server in front_ends]
    return front_ends[pids.index(int(holder.split(":")[1]))]


async def test_a_front_end_killed_mid_file_leaves_it_to_another_which_finishes_it_once(tmp_path, postgres_url):
    talk = write_talk(tmp_path, 3)
    # 0.3 s a segment: the 18 take >= 5 s, so the kill, within a few tenths of a second of the third
    # commit, finds the file mid-way, as Whisper's 1.5-2 s a segment did.
    hears = hears_phrases(decode_s=0.3)
    front_ends = two_front_ends(tmp_path, postgres_url, hears)
    try:
        job_id = await submit_file(front_ends[0].port, talk)
        job = await segments_committed(front_ends[1].port, job_id, 3)  # the file far from done
        (file,) = job["files"]
        dead = lease_holder(postgres_url, file["id"], front_ends)  # whichever front end took it
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait(30)
        survivor = front_ends[1 - front_ends.index(dead)]
        assert file["segments"] < 3 * len(PHRASES)  # cut off mid-way
        for _ in range(1800):
            job = await status_of(f"http://127.0.0.1:{survivor.port}", job_id)
            if job["status"] != "running":
                break
            await asyncio.sleep(0.1)
        assert job["status"] == "done" and job["files"][0]["status"] == "done", job
        assert any("resuming at" in line for line in survivor.log)  # it continued where the other stopped
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{survivor.port}/api/files/{file['id']}/export.srt") as response:
                exported = await response.text()
    finally:
        for server in front_ends:
            server.kill()
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(
            "SELECT seq, start_ms, text FROM segments WHERE file_id = %s ORDER BY seq", (file["id"],)
        ).fetchall()
    assert [r[0] for r in rows] == list(range(len(rows)))  # contiguous: nothing skipped
    starts = [r[1] for r in rows]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)  # nothing twice
    assert [words(r[2]) for r in rows] == PHRASES * 3  # what one uninterrupted run gives
    assert [words(caption.content) for caption in srt.parse(exported)] == PHRASES * 3  # a real parser reads it

    # The export is the one a single node gives: the same file on a plain server (SQLite, no
    # cluster, never interrupted) exports the same cues, times included. Nothing is killed there, so
    # its stand-in hears the same phrases without the 0.3 s a call (18 calls: 5 s of waiting).
    (tmp_path / "single").mkdir()
    single = ServerProcess(tmp_path / "single", stand_in=hears_phrases(decode_s=0.0))
    try:
        single_job = await wait_done(f"http://127.0.0.1:{single.port}", await submit_file(single.port, talk))
        (single_file,) = single_job["files"]
        url = f"http://127.0.0.1:{single.port}/api/files/{single_file['id']}/export.srt"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            single_export = await response.text()
    finally:
        single.kill()
    assert exported == single_export


async def test_a_job_cancelled_through_one_front_end_stops_on_the_one_transcribing_it(tmp_path, postgres_url):
    talk = write_talk(tmp_path, 4)
    # 0.3 s a segment: the transcribing front end's next commit usually comes before its next lease
    # renewal (every lease_s / 3 = 0.67 s), finds the file no longer held, and must still say
    # "cancelled", not that another front end holds it now (as it once did); with slower segments
    # the renewal finds it first, which says "cancelled" too.
    front_ends = two_front_ends(tmp_path, postgres_url, hears_phrases(decode_s=0.3))
    try:
        job_id = await submit_file(front_ends[0].port, talk)
        job = await segments_committed(front_ends[0].port, job_id, 2)  # under way, far from done
        async with aiohttp.ClientSession() as session:
            (file,) = job["files"]
            transcribing = lease_holder(postgres_url, file["id"], front_ends)
            other = front_ends[1 - front_ends.index(transcribing)]
            async with session.post(f"http://127.0.0.1:{other.port}/api/jobs/{job_id}/cancel") as response:
                assert response.status == 200, await response.text()
        # The front end transcribing it stops at its next lease renewal (lease_s / 3) and commits
        # nothing after the cancel; both front ends say so.
        await until(lambda: any(f"file {file['id']} " in line and "cancelled" in line for line in transcribing.log), 30)
        with psycopg.connect(postgres_url) as db:
            (committed,) = db.execute("SELECT count(*) FROM segments WHERE file_id = %s", (file["id"],)).fetchone()
        await asyncio.sleep(3)  # more than a lease: a holder that had not stopped would commit more
        with psycopg.connect(postgres_url) as db:
            (later,) = db.execute("SELECT count(*) FROM segments WHERE file_id = %s", (file["id"],)).fetchone()
        assert later == committed < 4 * len(PHRASES)
        for server in front_ends:
            job = await status_of(f"http://127.0.0.1:{server.port}", job_id)
            assert job["status"] == "cancelled" and job["files"][0]["status"] == "cancelled", job
    finally:
        for server in front_ends:
            server.kill()


async def test_live_history_and_jobs_survive_a_postgres_restart_and_healthz_says_degraded_meanwhile(
    start_server, postgres, postgres_url, tmp_path
):
    with_password = postgres_url.replace("postgres@", "postgres:s3cret@")  # trust auth: accepted, unused
    # lease_s 1: idle job workers look for files (and meet the stopped database) every third of a second
    server = start_server(cluster={"postgres_url": with_password, "lease_s": 1})
    await transcribe(server.url, compose([0.3, "hello world", 0.5]).audio, session_id="before")
    await asyncio.to_thread(postgres.stop)
    try:
        replies = await transcribe(server.url, LECTURE.audio, session_id="during")
        assert final_words(replies) == "good morning everyone please open the door thank you very much"  # live goes on

        async def degraded() -> bool:
            status, health = await get(server.http, "/healthz")
            return health["status"] == "degraded" and health["history"]["ok"] is False

        await until(degraded, timeout=30)
        status, health = await get(server.http, "/healthz")
        assert "s3cret" not in json.dumps(health) and health["history"]["path"].startswith("postgresql://")
    finally:
        await asyncio.to_thread(postgres.start)

    async def history_ok() -> bool:  # the finals kept meanwhile are written, then it says ok
        return (await get(server.http, "/healthz"))[1]["history"]["ok"] is True

    await until(history_ok, timeout=60)
    status, body = await get(server.http, "/api/sessions/during/export.txt")
    assert words(body.decode()) == "good morning everyone please open the door thank you very much"
    status, found = await get(server.http, "/api/history?q=hello")
    assert [r["source"] for r in found["results"]] == ["before"]
    lecture = write_wav(tmp_path / "lecture.wav", LECTURE.audio)
    status, job = await submit(server.http, [lecture])  # the job workers outlived the outage
    assert status == 201
    assert (await wait_done(server.http, job["job_id"]))["status"] == "done"

"""Crash-resume: a real server process is killed with SIGKILL in the middle of a job and started
again on the same database; every segment ends up in the results exactly once. The processes hear
through WholePhrasesEngine (tests/stand_in_server.py), a stand-in for the model: its words only tell
the segments apart, and its `decode_s` keeps the file far from done when the process is killed."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

import aiohttp
import pytest

from tests.job_engines import WholePhrasesEngine
from tests.speech import compose, write_wav
from tests.test_lifecycle import ServerProcess
from tests.wsclient import words

PHRASES = ["good morning everyone", "please open the door", "thank you very much", "hello world",
           "thank you all for coming", "we will answer them at the end"]  # fmt: skip


async def status_of(http: str, job_id: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}/api/jobs/{job_id}") as response:
            return await response.json()


@pytest.mark.slow  # a server process (run_server.py): no fixture marks it end to end
async def test_kill_9_mid_job_then_restart_gives_every_segment_exactly_once(tmp_path):
    # One long file (identical uploads would be deduplicated into one anyway): after the first few
    # commits it is far from done, however many segments one model call happens to finish.
    parts: list = [0.3]
    for phrase in PHRASES * 3:
        parts += [phrase, 0.7]
    talk = compose(parts)
    files = [write_wav(tmp_path / "talk.wav", talk.audio)]
    # 0.3 s a model call (one file segment a call): 18 segments take >= 5 s, so the kill, within
    # about 0.1 s of the third commit, finds the file mid-way, as Whisper's 1.5-2 s a segment did.
    hears = WholePhrasesEngine.of(talk, decode_s=0.3)
    server = ServerProcess(tmp_path, stand_in=hears, concurrent_files="2")
    try:
        form = aiohttp.FormData()
        for path in files:
            form.add_field("file", path.read_bytes(), filename=path.name)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{server.port}/api/jobs", data=form) as response:
                assert response.status == 201
                job_id = (await response.json())["job_id"]
        # Kill once some segments are committed and the job is far from done.
        for _ in range(600):
            job = await status_of(f"http://127.0.0.1:{server.port}", job_id)
            if sum(f["segments"] for f in job["files"]) >= 3:
                break
            await asyncio.sleep(0.1)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        committed_at_kill = sum(f["segments"] for f in job["files"])
        assert committed_at_kill < 3 * len(PHRASES)  # the file was cut off mid-way
    finally:
        server.kill()

    restarted = ServerProcess(tmp_path, stand_in=hears, concurrent_files="2")
    try:
        http = f"http://127.0.0.1:{restarted.port}"
        for _ in range(1800):
            job = await status_of(http, job_id)
            if job["status"] == "done":
                break
            await asyncio.sleep(0.1)
        assert job["status"] == "done" and all(f["status"] == "done" for f in job["files"]), job
        assert any("resuming at" in line for line in restarted.log)  # a file continued mid-way
    finally:
        restarted.signal(signal.SIGTERM)
        restarted.wait(60)
    database = sqlite3.connect(tmp_path / "captions.db")
    for file in job["files"]:
        rows = database.execute(
            "SELECT seq, start_ms, end_ms, text FROM segments WHERE file_id = ? ORDER BY seq", (file["id"],)
        ).fetchall()
        assert [r[0] for r in rows] == list(range(len(rows)))  # contiguous: nothing skipped
        starts = [r[1] for r in rows]
        assert starts == sorted(starts) and len(set(starts)) == len(starts)  # nothing twice
        assert [words(r[3]) for r in rows] == PHRASES * 3, file["name"]

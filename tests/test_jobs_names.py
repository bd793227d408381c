"""Non-ASCII file names kept exactly, end to end: the CLI's upload (a real subprocess), standard
multipart senders (RFC 7578's UTF-8 `filename`, RFC 5987's `filename*`, aiohttp's percent-encoded
names), the database row, /api/jobs, every export and the files the CLI writes.

The servers decode with WholePhrasesEngine (tests/job_engines.py), a stand-in with no model that
hears only SHORT's phrase, whole (anything else is "<unknown N ms>"): the words the CLI writes show
that the uploaded file's own audio was decoded; no test here is about recognition itself."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import pytest

from tests.job_engines import WholePhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose, write_wav
from tests.test_jobs import get, wait_done

ROOT = Path(__file__).resolve().parent.parent
NAME = "会议录音_一.wav"
SHORT = compose([0.3, "good morning everyone", 0.4])


@pytest.fixture
def start_stand_in(scorer):
    """conftest's start_server on the stand-in: start(**config_sections), stopped after the test."""
    with servers_on(WholePhrasesEngine.of(SHORT), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(scorer):
    """conftest's shared_server on the stand-in."""
    with servers_on(WholePhrasesEngine.of(SHORT), scorer) as start:
        yield start()


@pytest.fixture(scope="module")
def chinese_wav(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("names") / NAME, SHORT.audio)


def stored_names(server) -> list[str]:
    with sqlite3.connect(Path(server.server.config.jobs.db_path).expanduser()) as db:
        return [row[0] for row in db.execute("SELECT name FROM files ORDER BY id")]


async def download(http: str, path: str) -> tuple[bytes, str]:
    """The body and the file name its Content-Disposition gives (RFC 6266 filename*)."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}{path}") as response:
            assert response.status == 200, path
            disposition = response.headers["Content-Disposition"]
            assert "filename*=UTF-8''" in disposition
            return await response.read(), unquote(disposition.split("filename*=UTF-8''", 1)[1])


async def check_everywhere(http: str, job_id: str, name: str) -> None:
    """`name` exactly in /api/jobs, the job's progress and every export."""
    job = await wait_done(http, job_id)
    (file,) = job["files"]
    assert file["name"] == name and file["status"] == "done"
    status, listed = await get(http, "/api/jobs")
    assert [f["name"] for f in next(j for j in listed["jobs"] if j["id"] == job_id)["files"]] == [name]
    stem = name.rsplit(".", 1)[0]
    for fmt in ("txt", "srt", "vtt", "json"):
        body, filename = await download(http, f"/api/files/{file['id']}/export.{fmt}")
        assert filename == f"{name}.{fmt}"
        if fmt == "json":
            assert json.loads(body)["metadata"]["file"] == name
    body, _ = await download(http, f"/api/jobs/{job_id}/export.csv")
    assert {row["file"] for row in csv.DictReader(io.StringIO(body.decode("utf-8-sig")))} == {name}
    body, _ = await download(http, f"/api/jobs/{job_id}/export.json")
    assert [f["file"] for f in json.loads(body)["files"]] == [name]
    body, _ = await download(http, f"/api/jobs/{job_id}/export.zip")
    names = set(zipfile.ZipFile(io.BytesIO(body)).namelist())
    assert {f"{stem}.{fmt}" for fmt in ("txt", "srt", "vtt", "json")} <= names


async def test_the_cli_keeps_a_chinese_file_name_in_the_database_every_export_and_the_written_file(
    start_stand_in, chinese_wav, tmp_path
):
    import asyncio

    server = start_stand_in()
    out = tmp_path / "out"
    command = [sys.executable, "-m", "client.jobs", str(chinese_wav), "--url", server.http, "--out", str(out),
               "--format", "srt", "--hotwords", "阿里巴巴 30\n达摩院"]  # fmt: skip
    done = await asyncio.get_running_loop().run_in_executor(
        None, lambda: subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    )
    assert done.returncode == 0, done.stderr
    assert stored_names(server) == [NAME]  # not "%E4%BC%9A..."
    assert [p.name for p in out.iterdir()] == ["会议录音_一.srt"]
    assert "good morning" in (out / "会议录音_一.srt").read_text(encoding="utf-8").lower()
    status, listed = await get(server.http, "/api/jobs")
    (job,) = listed["jobs"]
    assert job["options"]["hotwords"] == [["阿里巴巴", 30], ["达摩院", 20]]  # the weight stayed a weight
    await check_everywhere(server.http, job["id"], NAME)


def multipart(disposition: str, data: bytes) -> tuple[bytes, str]:
    boundary = "livecaption-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: audio/wav\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "disposition, name",
    [
        # curl -F file=@会议.wav, browsers (RFC 7578, HTML5): the name in UTF-8
        ('form-data; name="file"; filename="会议 记录.wav"', "会议 记录.wav"),
        # RFC 5987 encoding, with an ASCII fallback in filename
        (
            f'form-data; name="file"; filename="meeting.wav"; filename*=UTF-8\'\'{quote("会议记录（二）.wav")}',
            "会议记录（二）.wav",
        ),
        # aiohttp's FormData default and tools built on it: percent-encoded in filename
        (f'form-data; name="file"; filename="{quote("访谈 100%.wav", safe="")}"', "访谈 100%.wav"),
        # an ASCII name with a literal percent sign that is no escape stays as it is
        ('form-data; name="file"; filename="100% talk.wav"', "100% talk.wav"),
    ],
)
async def test_standard_multipart_senders_keep_their_names(shared_server, chinese_wav, disposition, name):
    body, content_type = multipart(disposition, chinese_wav.read_bytes())
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{shared_server.http}/api/jobs", data=body,
                                headers={"Content-Type": content_type}) as response:  # fmt: skip
            created = await response.json()
            assert response.status == 201, created
    assert [f["name"] for f in created["files"]] == [name]
    await check_everywhere(shared_server.http, created["job_id"], name)

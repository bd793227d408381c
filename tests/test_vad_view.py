"""The VAD view (POST /api/vad, the /vad page) against espeak speech with known pauses, its upload
rules, and jobs with `"vad": false` (pre-cut clips: one segment per clip, cut at max_segment_s)."""

from __future__ import annotations

import csv
import io

import aiohttp
import numpy as np
import pytest

from inference.engines.instant import InstantEngine
from tests.server_thread import servers_on
from tests.speech import RATE, compose, write_wav
from tests.test_jobs import get, submit, wait_done

TALK = compose([0.5, "good morning everyone", 1.0, "please open the door", 0.8, "thank you very much", 0.6])
TOLERANCE_S = 0.15


@pytest.fixture(scope="module")
def start_instant(scorer):
    """Servers on the product's "instant" engine (fixed text, no model): no test here reads words;
    the VAD view decodes nothing, and the jobs below count segments."""
    with servers_on(InstantEngine(), scorer) as start:
        yield start


@pytest.fixture(scope="module")
def shared_server(start_instant):
    return start_instant()


@pytest.fixture(scope="module")
def talk_wav(tmp_path_factory):
    return write_wav(tmp_path_factory.mktemp("vad") / "讲话.wav", TALK.audio)


async def post_vad(http: str, path, query: str = "", headers=None) -> tuple[int, object]:
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", path.read_bytes(), filename=path.name)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{http}/api/vad{query}", data=form, headers=headers or {}) as response:
            if response.content_type == "text/csv":
                return response.status, await response.text()
            return response.status, await response.json(content_type=None)


async def test_speech_intervals_match_the_known_spans_as_json_and_csv(shared_server, talk_wav):
    status, body = await post_vad(shared_server.http, talk_wav)
    assert status == 200, body
    assert body["file"] == "讲话.wav"
    assert abs(body["duration"] - len(TALK.audio) / RATE) < 0.01
    got = [(i["start"], i["end"]) for i in body["intervals"]]
    expected = [(start / RATE, end / RATE) for start, end in TALK.spans]
    assert len(got) == len(expected), got
    for (start, end), (want_start, want_end) in zip(got, expected):
        assert abs(start - want_start) < TOLERANCE_S and abs(end - want_end) < TOLERANCE_S, (got, expected)
    assert body["settings"]["silence_ms"] == shared_server.server.config.endpointing.silence_ms
    status, text = await post_vad(shared_server.http, talk_wav, "?format=csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(float(r["start_s"]), float(r["end_s"])) for r in rows] == got
    assert [r["index"] for r in rows] == ["1", "2", "3"]


async def test_the_vad_view_follows_the_upload_rules(start_instant, talk_wav, tmp_path):
    server = start_instant(
        auth={"tokens": ["secret-token-1234567890"]}, jobs={"max_upload_mb": 1, "max_file_audio_s": 10}
    )
    status, body = await post_vad(server.http, talk_wav)
    assert status == 401  # a private route, as uploads are
    auth = {"Authorization": "Bearer secret-token-1234567890"}
    status, body = await post_vad(server.http, talk_wav, headers=auth)
    assert status == 200 and len(body["intervals"]) == 3
    big = write_wav(tmp_path / "big.wav", np.zeros(RATE * 40, dtype=np.float32))  # 1.28 MB > 1 MB
    status, body = await post_vad(server.http, big, headers=auth)
    assert status == 413 and body["code"] == "too_large"
    long = write_wav(tmp_path / "long.wav", np.zeros(RATE * 12, dtype=np.float32))
    status, body = await post_vad(server.http, long, headers=auth)
    assert status == 400 and body["code"] == "audio_too_long" and "jobs.max_file_audio_s" in body["error"]
    status, body = await post_vad(server.http, talk_wav, "?format=xml", headers=auth)
    assert status == 400 and "format" in body["error"]
    async with aiohttp.ClientSession() as session:  # a body that is not the multipart it says it is
        broken = {**auth, "Content-Type": "multipart/form-data; boundary=nope"}
        async with session.post(f"{server.http}/api/vad", data=b"--other\r\ngarbage", headers=broken) as response:
            assert response.status == 400 and "malformed" in (await response.json())["error"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.http}/vad") as response:  # the page asks for the token itself
            assert response.status == 200 and "<table" in await response.text()


async def test_a_job_without_vad_decodes_each_clip_as_one_segment(shared_server, tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    two_phrases = compose([0.2, "good morning everyone", 0.8, "thank you very much", 0.2])  # VAD: 2 segments
    clips = [write_wav(folder / "a.wav", two_phrases.audio), write_wav(folder / "b.wav", compose(["hello"]).audio)]
    status, created = await submit(shared_server.http, clips, {"vad": False, "language": "en"})
    assert status == 201
    job = await wait_done(shared_server.http, created["job_id"])
    assert job["options"]["vad"] is False
    assert [f["segments"] for f in job["files"]] == [1, 1]
    status, with_vad = await submit(shared_server.http, clips[:1], {"language": "en"})
    job = await wait_done(shared_server.http, with_vad["job_id"])
    assert job["files"][0]["segments"] == 2 and "vad" not in job["options"]  # the default is unchanged
    # The VAD view finds exactly the segments a job cuts (one chain for live audio, jobs and the view).
    status, exported = await get(shared_server.http, f"/api/files/{job['files'][0]['id']}/export.json")
    status, found = await post_vad(shared_server.http, clips[0])
    assert [(i["start"], i["end"]) for i in found["intervals"]] == [
        (s["start"], s["end"]) for s in exported["segments"]
    ]
    # Longer than max_segment_s: cut into pieces of that length, every sample decoded.
    status, created = await submit(shared_server.http, clips[:1], {"vad": "false", "max_segment_s": 1})
    job = await wait_done(shared_server.http, created["job_id"])
    (file,) = job["files"]
    assert file["segments"] == int(np.ceil(len(two_phrases.audio) / RATE)) and file["status"] == "done"


async def test_fixed_segments_cover_the_audio_exactly():
    from jobs.segmenter import fixed_segments

    chunks = [np.full(RATE, i, dtype=np.float32) for i in range(5)] + [np.ones(RATE // 2, dtype=np.float32)]
    events = [e async for e in fixed_segments(chunks, max_segment_s=2.0)]
    assert [(e.start, e.end, e.reason) for e in events] == [
        (0, 2 * RATE, "max_length"),
        (2 * RATE, 4 * RATE, "max_length"),
        (4 * RATE, 5 * RATE + RATE // 2, "end_of_stream"),
    ]
    assert np.array_equal(np.concatenate([e.audio for e in events]), np.concatenate(chunks))
    assert [e async for e in fixed_segments([], 2.0)] == []

"""The storage interface, run against both implementations: the embedded SQLite `Store` and
`PostgresStore` on a throwaway PostgreSQL server (tests/pg_server.py)."""

from __future__ import annotations

import pytest

from jobs.pg_store import PostgresStore
from jobs.storage import DATABASE_ERRORS, LeaseLost
from jobs.store import KeyConflict, Store

FILES = [("a.wav", "/uploads/a.wav", "sha-a"), ("b.wav", "/uploads/b.wav", "sha-b")]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    """open_store() -> a store on the same database each call (a restart, or another front end)."""
    if request.param == "sqlite":
        path = tmp_path / "captions.db"
        make = lambda: Store(path)  # noqa: E731
    else:
        url = request.getfixturevalue("postgres_url")
        make = lambda: PostgresStore(url, lease_s=30)  # noqa: E731
    opened = []

    def open_one():
        opened.append(make())
        return opened[-1]

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store):
    return open_store()


def test_an_idempotency_key_gives_one_job_per_owner_and_refuses_another_request(store):
    job_id, made = store.create_job(FILES, {"language": "zh"}, "key-1", None, "owner-1", "hash-1")
    assert made
    assert store.create_job(FILES, {"language": "zh"}, "key-1", None, "owner-1", "hash-1") == (job_id, False)
    with pytest.raises(KeyConflict):
        store.create_job(FILES[:1], {}, "key-1", None, "owner-1", "hash-2")
    other, made = store.create_job(FILES, {}, "key-1", None, "owner-2", "hash-2")  # keys are per owner
    assert made and other != job_id
    job = store.job(job_id)
    assert job["idempotency_key"] == "key-1" and job["options"] == {"language": "zh"} and job["owner"] == "owner-1"
    assert [f["name"] for f in job["files"]] == ["a.wav", "b.wav"] and job["files"][0]["segments"] == 0
    assert [j["id"] for j in store.jobs()] == [other, job_id]  # newest first


def test_every_segment_is_committed_once_with_its_resume_point(open_store):
    store = open_store()
    job_id, _ = store.create_job(FILES[:1], {}, owner="owner-1")
    row = store.claim_file(())
    assert row is not None and row.job_id == job_id and row.next_seq == 0
    store.start_file(row.id, 9.0, "whisper", "whisper-base")
    store.commit_segment(row.id, 0, 0, 900, "good morning everyone", 1.5)
    cut_words = [(" please", 1000), (" open", 1400), (" the", 1650), (" 门", 1800)]  # each with its start (ms)
    store.commit_segment(row.id, 1, 1000, 1900, "please open the 门", 3.0, 2950, cut_words)  # cut for length
    with pytest.raises((*DATABASE_ERRORS, LeaseLost)):  # the same segment twice: refused, nothing changes
        store.commit_segment(row.id, 1, 1000, 1900, "please open the door", 3.0)
    store.close()

    restarted = open_store()  # a restart (or another front end): the file resumes after its last segment
    if isinstance(restarted, PostgresStore):
        restarted.instance = store.instance  # the same holder, or the lease would still keep it out
    row = restarted.claim_file(())
    assert (row.status, row.next_seq, row.done_s, row.engine, row.model) == ("running", 2, 3.0, "whisper",
                                                                              "whisper-base")  # fmt: skip
    assert row.cut_words_end_ms == 2950  # the next segment joins the cut there
    assert row.cut_words == tuple(cut_words)  # and is given these words as its forced prefix
    listed = restarted.job(job_id)["files"][0]
    assert "cut_words_end_ms" not in listed and "cut_words" not in listed  # (not part of the job's listing)
    restarted.commit_segment(row.id, 2, 3100, 4000, "thank you", 4.5)
    assert restarted.file(row.id).cut_words_end_ms is None and restarted.file(row.id).cut_words == ()
    restarted.finish_file(row.id)
    assert [s["seq"] for s in restarted.segments(row.id)] == [0, 1, 2]
    job = restarted.job(job_id)
    assert job["status"] == "done" and job["files"][0]["done_s"] == 9.0 and job["files"][0]["segments"] == 3
    assert restarted.claim_file(()) is None and restarted.pending_files() == []


def test_a_job_fails_only_when_none_of_its_files_could_be_transcribed(store):
    job_id, _ = store.create_job(FILES, {})
    first = store.claim_file(())
    second = store.claim_file({first.id})
    assert second.id != first.id and store.claim_file({first.id, second.id}) is None
    store.finish_file(first.id, "a.wav: not audio")
    assert store.job(job_id)["status"] == "queued"  # one file still to go
    store.finish_file(second.id)
    job = store.job(job_id)
    assert job["status"] == "done" and [f["status"] for f in job["files"]] == ["failed", "done"]
    assert job["files"][0]["error"] == "a.wav: not audio"


def test_cancel_stops_resumption_and_delete_removes_everything(store):
    job_id, _ = store.create_job(FILES, {}, owner="owner-1")
    row = store.claim_file(())
    store.start_file(row.id, None, "whisper", "whisper-base")
    store.commit_segment(row.id, 0, 0, 900, "cancelled halfway", 1.0)
    assert store.renew_leases([row.id]) == {row.id}
    assert store.cancel_job(job_id) is True and store.cancel_job(job_id) is False
    assert store.renew_leases([row.id]) == set()  # whoever transcribes it stops
    assert store.claim_file(()) is None and store.pending_files() == []
    job = store.job(job_id)
    assert job["status"] == "cancelled" and {f["status"] for f in job["files"]} == {"cancelled"}
    assert store.segments(row.id)[0]["text"] == "cancelled halfway"  # what was committed stays
    assert sorted(store.delete_job(job_id)) == ["/uploads/a.wav", "/uploads/b.wav"]
    assert store.job(job_id) is None and store.segments(row.id) == [] and store.search("halfway") == []


def test_pending_counts_are_the_files_still_to_transcribe(open_store):
    store, other_front_end = open_store(), open_store()
    assert store.pending_counts() == {"queued": 0, "running": 0}
    kept, _ = store.create_job(FILES, {})
    cancelled, _ = store.create_job(FILES[:1], {})
    row = store.claim_file(())
    store.start_file(row.id, None, "whisper", "whisper-base")
    assert other_front_end.pending_counts() == {"queued": 2, "running": 1}
    store.cancel_job(cancelled)
    store.finish_file(row.id)
    assert other_front_end.pending_counts() == {"queued": 1, "running": 0}
    assert store.job(kept)["status"] == "running"


def test_owners_see_only_their_own_jobs_files_and_sessions(store):
    job_id, _ = store.create_job(FILES[:1], {}, owner="owner-1")
    file_id = store.job(job_id)["files"][0]["id"]
    assert store.job(job_id, "owner-2") is None and store.job(job_id, "owner-1") is not None
    assert store.file(file_id, "owner-2") is None and store.file(file_id, "owner-1").name == "a.wav"
    assert store.jobs(owner="owner-2") == [] and [j["id"] for j in store.jobs(owner="owner-1")] == [job_id]
    store.add_live_finals([("s1", 0, 0, 500, "mine", "whisper", {"lang": "en"}, "base", "owner-1")])
    store.add_live_finals([("s1", 1, 500, 900, "intruder", "whisper", {}, "base", "owner-2")])  # not kept
    store.add_live_finals([("s1", 0, 0, 600, "mine, corrected", "whisper", {}, "base", "owner-1")])  # resent
    assert [f["text"] for f in store.live_finals("s1")] == ["mine, corrected"]
    assert store.live_finals("s1", "owner-2") == [] and len(store.live_finals("s1", "owner-1")) == 1
    assert store.delete_session("s1", "owner-2") is False and store.delete_session("s1", "owner-1") is True
    assert store.live_finals("s1") == []


def test_search_finds_chinese_and_any_case_without_query_syntax(store):
    store.add_live_finals([
        ("live-1", 0, 0, 900, "今天下午开会讨论项目进度", "whisper", {}, "base", "owner-1"),
        ("live-1", 1, 900, 1800, "Quarterly REVIEW of the budget", "whisper", {}, "base", "owner-1"),
        ("live-2", 0, 0, 900, '会议 50% 完成 "quoted" NEAR(x) *_', "funasr", {}, None, "owner-2"),
    ])  # fmt: skip
    job_id, _ = store.create_job(FILES[:1], {}, owner="owner-2")
    row = store.claim_file(())
    store.start_file(row.id, None, "funasr", "paraformer")
    store.commit_segment(row.id, 0, 0, 900, "明天上午继续开会讨论预算", 1.0)

    def found(text, **kwargs):
        return sorted((r["kind"], r["source"], r["seq"]) for r in store.search(text, **kwargs))

    assert found("开会讨论") == [("file", str(row.id), 0), ("live", "live-1", 0)]  # Chinese, no spaces
    assert found("开会讨论项目") == [("live", "live-1", 0)]
    assert found("会") == [("file", str(row.id), 0), ("live", "live-1", 0), ("live", "live-2", 0)]  # short: scans
    assert found("quarterly review") == [("live", "live-1", 1)]  # any case, across words
    assert found("50% 完") == [("live", "live-2", 0)] and found('"quoted" NEAR(x) *_') == [("live", "live-2", 0)]
    assert found("50%%") == [] and found("x_") == []  # % and _ are characters, not wildcards
    assert found("开会", owner="owner-2") == [("file", str(row.id), 0)]
    assert found("开会", until=0.0) == [] and found("budget", since=0.0) == [("live", "live-1", 1)]
    (hit,) = store.search("预算")
    assert (hit["engine"], hit["model"], hit["text"]) == ("funasr", "paraformer", "明天上午继续开会讨论预算")
    store.delete_session("live-1")
    assert found("budget") == []  # deleted rows leave the index with them

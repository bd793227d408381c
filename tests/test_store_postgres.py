"""PostgreSQL as the store of many front ends: each file is claimed by one front end at a time, a
front end that dies loses its files to another once its lease runs out (resumed after the last
committed segment, none stored twice), and a PostgreSQL restart loses nothing."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from jobs.pg_store import PostgresStore
from jobs.runner import JobRunner
from jobs.storage import DATABASE_ERRORS, LeaseLost
from settings import config as config_module
from tests.conftest import make_config


def wait_for(condition, timeout_s: float = 30.0, every_s: float = 0.1):
    """Polls until condition() is truthy (returned); fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout_s} s")
        time.sleep(every_s)
    return value


def test_two_front_ends_claiming_at_once_take_each_file_once(postgres_url):
    setup = PostgresStore(postgres_url)
    files = [(f"{n}.wav", f"/uploads/{n}.wav", f"sha-{n}") for n in range(40)]
    setup.create_job(files[:20], {})
    setup.create_job(files[20:], {})
    expected = {row.id for row in setup.pending_files()}
    front_ends = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    claimed: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def claim_all(index: int) -> None:
        store = front_ends[index]
        start.wait()
        while (row := store.claim_file(claimed[index])) is not None:
            claimed[index].append(row.id)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    both = claimed[0] + claimed[1]
    assert len(both) == len(set(both)) == 40 and set(both) == expected  # every file once, none twice
    assert all(claimed)  # both front ends got work
    for index, store in enumerate(front_ends):  # each holds what it claimed, not the other's
        assert store.renew_leases(both) == set(claimed[index])
    for store in (setup, *front_ends):
        store.close()


def test_a_file_whose_lease_ran_out_is_resumed_by_another_front_end_once(postgres_url):
    a, b = PostgresStore(postgres_url, lease_s=1), PostgresStore(postgres_url, lease_s=1)
    job_id, _ = a.create_job([("talk.wav", "/uploads/talk.wav", "sha")], {})
    row = a.claim_file(())
    a.start_file(row.id, 10.0, "whisper", "whisper-base")
    a.commit_segment(row.id, 0, 0, 900, "one", 1.0)
    a.commit_segment(row.id, 1, 1000, 1900, "two", 2.0)
    assert b.claim_file(()) is None  # A's lease holds it
    # A stops renewing (its process was killed); B takes the file once the lease has run out.
    taken = wait_for(lambda: b.claim_file(()))
    assert (taken.id, taken.next_seq, taken.done_s) == (row.id, 2, 2.0)
    with pytest.raises(LeaseLost):  # A, back from a long pause, may not commit what B now owns
        a.commit_segment(row.id, 2, 2000, 2900, "A's late three", 3.0)
    assert a.renew_leases([row.id]) == set()
    b.start_file(taken.id, 10.0, "whisper", "whisper-base")
    b.commit_segment(taken.id, 2, 2000, 2900, "three", 3.0)
    a.finish_file(row.id)  # not A's any more: left alone
    assert b.job(job_id)["status"] == "running"
    b.finish_file(taken.id)
    assert [(s["seq"], s["text"]) for s in b.segments(row.id)] == [(0, "one"), (1, "two"), (2, "three")]
    assert b.job(job_id)["status"] == "done"
    a.close()
    b.close()


def test_a_front_end_that_stops_cleanly_lets_go_of_its_files_at_once(postgres_url):
    a, b = PostgresStore(postgres_url, lease_s=3600), PostgresStore(postgres_url, lease_s=3600)
    a.create_job([("talk.wav", "/uploads/talk.wav", "sha")], {})
    row = a.claim_file(())
    assert b.claim_file(()) is None
    a.close()  # SIGTERM: the runner stops its workers, then closes the store
    assert b.claim_file(()).id == row.id  # not an hour later
    b.close()


def test_renewed_leases_keep_a_file_from_other_front_ends(postgres_url):
    a, b = PostgresStore(postgres_url, lease_s=1), PostgresStore(postgres_url, lease_s=1)
    a.create_job([("talk.wav", "/uploads/talk.wav", "sha")], {})
    row = a.claim_file(())
    for _ in range(8):  # 2 s: twice the lease, renewed every quarter of it
        time.sleep(0.25)
        assert a.renew_leases([row.id]) == {row.id}
        assert b.claim_file(()) is None
    a.close()
    b.close()


def test_postgres_stopped_and_restarted_mid_job_loses_nothing(postgres, postgres_url):
    store = PostgresStore(postgres_url)
    job_id, _ = store.create_job([("talk.wav", "/uploads/talk.wav", "sha")], {})
    row = store.claim_file(())
    store.start_file(row.id, 10.0, "whisper", "whisper-base")
    store.commit_segment(row.id, 0, 0, 900, "before the restart", 1.0)
    postgres.stop()
    try:
        with pytest.raises(DATABASE_ERRORS):
            store.commit_segment(row.id, 1, 1000, 1900, "during", 2.0)
        with pytest.raises(DATABASE_ERRORS):  # and again: no server to connect to
            store.commit_segment(row.id, 1, 1000, 1900, "during", 2.0)
    finally:
        postgres.start()
    # The runner retries the segment it could not commit; the store connects again by itself.
    store.commit_segment(row.id, 1, 1000, 1900, "during", 2.0)
    store.commit_segment(row.id, 2, 2000, 2900, "after", 3.0)
    store.finish_file(row.id)
    assert [s["text"] for s in store.segments(row.id)] == ["before the restart", "during", "after"]
    assert store.job(job_id)["status"] == "done"
    store.close()


async def test_live_finals_wait_in_memory_while_postgres_is_down_and_all_land(postgres, postgres_url):
    config = make_config(cluster={"postgres_url": postgres_url, "lease_s": 3})
    # Stand-in for the inference executor: recording history needs only the engine's name and model.
    executor = SimpleNamespace(engine=SimpleNamespace(name="whisper", model="whisper-base"), engines={})
    runner = JobRunner(PostgresStore(postgres_url), executor, config)
    await runner.start()

    def final(n: int) -> dict:
        return {"segment_id": n, "start_ms": n * 1000, "end_ms": n * 1000 + 900, "final_text": f"final {n}"}

    async def until(condition) -> None:
        for _ in range(600):
            if condition():
                return
            await asyncio.sleep(0.1)
        pytest.fail("condition not reached in 60 s")

    try:
        runner.record_live_final("room-1", final(0), {}, "owner-1")
        await until(lambda: len(runner.store.live_finals("room-1")) == 1)
        await asyncio.to_thread(postgres.stop)
        try:
            for n in range(1, 6):
                runner.record_live_final("room-1", final(n), {}, "owner-1")
            await until(lambda: not runner.healthy)  # /healthz says degraded
            assert "live final(s) waiting" in runner.last_error
        finally:
            await asyncio.to_thread(postgres.start)
        await until(lambda: runner.healthy)
        finals = await runner.db(runner.store.live_finals, "room-1")
        assert [f["text"] for f in finals] == [f"final {n}" for n in range(6)]  # each once, in order
    finally:
        await runner.close()


def test_an_unreachable_postgres_stops_startup_with_one_line_naming_the_setting(tmp_path):
    from tests.pg_server import free_port as unused_port  # a port nothing listens on
    from tests.test_funasr_engine import start_server_without_hub_models

    url = f"postgresql://captions:s3cret-password@127.0.0.1:{unused_port()}/captions"

    def edit(text: str) -> str:
        text = text.replace('engine = "whisper" ', 'engine = "instant" ')  # the live engine loads at once
        return text.replace('postgres_url = ""', f'postgres_url = "{url}"')

    done, errors = start_server_without_hub_models(tmp_path, edit)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(errors) == 1 and "cluster.postgres_url" in errors[0] and "127.0.0.1" in errors[0]
    assert "s3cret-password" not in done.stderr  # the password is never printed


def test_the_cluster_settings_are_checked_at_start():
    assert config_module.load().cluster.postgres_url == ""  # not configured: the SQLite store, as before
    with pytest.raises(config_module.ConfigError, match="cluster.postgres_url") as refused:
        config_module.load(None, {"cluster": {"postgres_url": "mysql://root:hunter2@db/x"}})
    assert "hunter2" not in str(refused.value)
    with pytest.raises(config_module.ConfigError, match="cluster.lease_s"):
        config_module.load(None, {"cluster": {"lease_s": 0}})
    with pytest.raises(config_module.ConfigError, match="unknown setting"):
        config_module.load(None, {"cluster": {"postgres_host": "db"}})


def test_the_backup_command_refuses_a_postgres_store_and_names_pg_dump(tmp_path, postgres_url):
    import subprocess
    import sys

    from settings.config import DEFAULT_CONFIG_PATH

    with_password = postgres_url.replace("postgres@", "postgres:s3cret@")  # trust auth: accepted, unused
    config = tmp_path / "config.toml"
    config.write_text(DEFAULT_CONFIG_PATH.read_text().replace('postgres_url = ""', f'postgres_url = "{with_password}"'))
    done = subprocess.run([sys.executable, "-m", "jobs.backup", str(tmp_path / "copy.db"), "--config", str(config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "pg_dump" in done.stderr and "cluster.postgres_url" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "s3cret" not in done.stderr
    assert not (tmp_path / "copy.db").exists()

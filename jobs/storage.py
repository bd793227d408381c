"""The storage interface the job runner, the jobs API and live history use, and the choice between
its two implementations: the embedded SQLite `Store` (jobs/store.py, the default) and
`PostgresStore` (jobs/pg_store.py) when cluster.postgres_url is set, shared by many front ends.
Every call is synchronous and runs on the runner's database thread (searches on a thread of their own)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any, Protocol

import psycopg

from jobs.store import FileRow, Store

# What a database call raises when the database fails (disk full, read-only, server gone): callers
# report it on /healthz, keep what they hold and retry.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, psycopg.Error, OSError)


class LeaseLost(Exception):
    """This front end no longer holds the file (its lease ran out and another took it, or the job was
    cancelled or deleted): whatever it decoded is not committed; the holder carries on."""


class JobStore(Protocol):
    path: Any  # where the data lives, for logs and /healthz (a file, or a URL without its password)

    def close(self) -> None: ...
    def check_writable(self) -> None: ...
    def backup(self, destination: str) -> None: ...

    # jobs
    def create_job(self, files: list[tuple[str, str, str]], options: dict[str, Any], idempotency_key: str | None = None,
                   engine: str | None = None, owner: str = "anonymous",
                   request_hash: str | None = None) -> tuple[str, bool]: ...  # fmt: skip
    def job(self, job_id: str, owner: str | None = None) -> dict[str, Any] | None: ...
    def jobs(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]: ...
    def cancel_job(self, job_id: str) -> bool: ...
    def delete_job(self, job_id: str) -> list[str]: ...

    # files and their segments
    def pending_files(self) -> list[FileRow]: ...
    def pending_counts(self) -> dict[str, int]:
        """Files still to transcribe (on every front end sharing the store): {"queued": n, "running": m}."""

    def claim_file(self, skip: Collection[int]) -> FileRow | None:
        """The next file to transcribe (not one of `skip`, which this front end runs already), now held
        by this front end; None when there is none."""

    def renew_leases(self, file_ids: Collection[int]) -> set[int]:
        """Of `file_ids`, those this front end still holds and should go on with (the rest were taken
        over, cancelled or deleted)."""

    def file(self, file_id: int, owner: str | None = None) -> FileRow | None: ...
    def start_file(self, file_id: int, duration_s: float | None, engine: str, model: str) -> None: ...
    def commit_segment(
        self,
        file_id: int,
        seq: int,
        start_ms: int,
        end_ms: int,
        text: str,
        done_s: float,
        cut_words_end_ms: int | None = None,
        cut_words: Sequence[tuple[str, int]] = (),
    ) -> None: ...
    def finish_file(self, file_id: int, error: str | None = None) -> None: ...
    def segments(self, file_id: int) -> list[dict[str, Any]]: ...

    # live history
    def add_live_finals(self, finals: list[tuple]) -> None: ...
    def live_finals(self, session_id: str, owner: str | None = None) -> list[dict[str, Any]]: ...
    def delete_session(self, session_id: str, owner: str | None = None) -> bool: ...
    def search(self, text: str = "", since: float | None = None, until: float | None = None, limit: int = 200,
               owner: str | None = None, timeout_s: float = ...) -> list[dict[str, Any]]: ...  # fmt: skip


def open_store(config) -> JobStore:
    """PostgreSQL when cluster.postgres_url is set (StoreError naming that setting when it cannot be
    reached), else the SQLite file at jobs.db_path."""
    if config.cluster.postgres_url:
        from jobs.pg_store import PostgresStore

        return PostgresStore(config.cluster.postgres_url, lease_s=config.cluster.lease_s)
    return Store(config.jobs.db_path)

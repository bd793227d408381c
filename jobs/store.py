"""SQLite store (WAL): batch jobs with per-file and per-segment progress, and the history of live
sessions' finals. Every call is synchronous and meant for one dedicated thread (see HistoryWriter
in jobs/runner.py); the schema is the crash-resume record: a segment is committed the moment its
text exists, and a file resumes after its last committed segment."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    options TEXT NOT NULL,
    status TEXT NOT NULL,                  -- queued | running | done | failed | cancelled
    idempotency_key TEXT UNIQUE,
    started REAL,
    finished REAL,
    engine TEXT                            -- the engine the job asked for (NULL: made before engines were chosen)
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,                  -- queued | running | done | failed
    duration_s REAL,
    done_s REAL NOT NULL DEFAULT 0,        -- audio time through VAD and committed (resume point)
    next_seq INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    engine TEXT,                           -- the engine and model that produced its segments
    model TEXT
);
CREATE TABLE IF NOT EXISTS segments (
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (file_id, seq)
);
CREATE TABLE IF NOT EXISTS live_sessions (
    session_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    engine TEXT NOT NULL,
    options TEXT NOT NULL,
    model TEXT
);
CREATE TABLE IF NOT EXISTS live_finals (
    session_id TEXT NOT NULL REFERENCES live_sessions(session_id) ON DELETE CASCADE,
    segment_id INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (session_id, segment_id)
);
CREATE INDEX IF NOT EXISTS files_by_job ON files(job_id);
"""
# Columns added after the first release: a database made before them gets them on open.
ADDED_COLUMNS = {"jobs": ("engine TEXT",), "files": ("engine TEXT", "model TEXT"), "live_sessions": ("model TEXT",)}


@dataclass(frozen=True)
class FileRow:
    id: int
    job_id: str
    name: str
    path: str
    status: str
    duration_s: float | None
    done_s: float
    next_seq: int
    error: str | None
    engine: str | None = None  # what produced the committed segments (None: nothing yet, or an old row)
    model: str | None = None


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        # WAL: readers never block the writer; NORMAL sync survives a killed process (not power loss).
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        for table, columns in ADDED_COLUMNS.items():
            present = {row["name"] for row in self.db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in present:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def close(self) -> None:
        self.db.close()

    def _tx(self):
        return _Transaction(self.db)

    # --- jobs ---------------------------------------------------------------------------------
    def create_job(
        self,
        files: list[tuple[str, str, str]],
        options: dict[str, Any],
        idempotency_key: str | None = None,
        engine: str | None = None,
    ) -> str:
        """files: (name, stored path, sha256); engine: the one its files ask for. Returns the job id
        (an existing one for a repeated key)."""
        if idempotency_key:
            row = self.db.execute("SELECT id FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            if row:
                return row["id"]
        job_id = uuid.uuid4().hex[:12]
        with self._tx():
            self.db.execute(
                "INSERT INTO jobs (id, created, options, status, idempotency_key, engine) "
                "VALUES (?, ?, ?, 'queued', ?, ?)",
                (job_id, time.time(), json.dumps(options, ensure_ascii=False), idempotency_key, engine),
            )
            self.db.executemany(
                "INSERT INTO files (job_id, name, path, sha256, status) VALUES (?, ?, ?, ?, 'queued')",
                [(job_id, name, path, digest) for name, path, digest in files],
            )
        return job_id

    def job(self, job_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = dict(row)
        job["options"] = json.loads(job["options"])
        files = self.db.execute(
            "SELECT f.*, (SELECT COUNT(*) FROM segments s WHERE s.file_id = f.id) AS segments "
            "FROM files f WHERE f.job_id = ? ORDER BY f.id",
            (job_id,),
        )
        job["files"] = [dict(r) for r in files]
        return job

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self.job(r["id"]) for r in rows]

    def pending_files(self) -> list[FileRow]:
        """Files still to transcribe, oldest job first; `running` ones were cut off by a crash."""
        rows = self.db.execute(
            "SELECT f.* FROM files f JOIN jobs j ON j.id = f.job_id "
            "WHERE f.status IN ('queued', 'running') AND j.status IN ('queued', 'running') ORDER BY j.created, f.id"
        ).fetchall()
        return [_file_row(r) for r in rows]

    def file(self, file_id: int) -> FileRow | None:
        row = self.db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return _file_row(row) if row else None

    def start_file(self, file_id: int, duration_s: float | None, engine: str, model: str) -> None:
        """The file is being transcribed by `engine` (`model`): recorded with its results."""
        with self._tx():
            self.db.execute(
                "UPDATE files SET status = 'running', duration_s = COALESCE(?, duration_s), engine = ?, model = ? "
                "WHERE id = ?",
                (duration_s, engine, model, file_id),
            )
            self.db.execute(
                "UPDATE jobs SET status = 'running', started = COALESCE(started, ?) "
                "WHERE id = (SELECT job_id FROM files WHERE id = ?)",
                (time.time(), file_id),
            )

    def commit_segment(self, file_id: int, seq: int, start_ms: int, end_ms: int, text: str, done_s: float) -> None:
        """One decoded segment and the file's new resume point, atomically."""
        with self._tx():
            self.db.execute(
                "INSERT INTO segments (file_id, seq, start_ms, end_ms, text) VALUES (?, ?, ?, ?, ?)",
                (file_id, seq, start_ms, end_ms, text),
            )
            self.db.execute(
                "UPDATE files SET next_seq = ?, done_s = ? WHERE id = ? AND next_seq = ?",
                (seq + 1, done_s, file_id, seq),
            )

    def advance(self, file_id: int, done_s: float) -> None:
        """Silence up to done_s holds no segment: the resume point moves past it."""
        self.db.execute("UPDATE files SET done_s = MAX(done_s, ?) WHERE id = ?", (done_s, file_id))

    def finish_file(self, file_id: int, error: str | None = None) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE files SET status = ?, error = ?, "
                "done_s = CASE WHEN ? IS NULL THEN COALESCE(duration_s, done_s) ELSE done_s END WHERE id = ?",
                ("failed" if error else "done", error, error, file_id),
            )
            self.db.execute(
                # done when every file is finished; failed when none of them could be transcribed
                "UPDATE jobs SET finished = ?, status = CASE WHEN EXISTS "
                "(SELECT 1 FROM files WHERE job_id = jobs.id AND status = 'done') THEN 'done' ELSE 'failed' END "
                "WHERE id = (SELECT job_id FROM files WHERE id = ?) "
                "AND NOT EXISTS (SELECT 1 FROM files WHERE job_id = jobs.id AND status IN ('queued', 'running'))",
                (time.time(), file_id),
            )

    def segments(self, file_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT seq, start_ms, end_ms, text FROM segments WHERE file_id = ? ORDER BY seq", (file_id,)
        )
        return [dict(r) for r in rows]

    def delete_job(self, job_id: str) -> list[str]:
        """Deletes the job and its results; returns the stored file paths for the caller to remove."""
        paths = [r["path"] for r in self.db.execute("SELECT path FROM files WHERE job_id = ?", (job_id,))]
        with self._tx():
            self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return paths

    # --- live history -------------------------------------------------------------------------
    def add_live_final(self, session_id: str, segment_id: int, start_ms: int, end_ms: int, text: str,
                       engine: str, options: dict[str, Any], model: str | None = None) -> None:  # fmt: skip
        now = time.time()
        with self._tx():
            self.db.execute(
                "INSERT INTO live_sessions (session_id, created, updated, engine, options, model) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(session_id) DO UPDATE SET updated = excluded.updated",
                (session_id, now, now, engine, json.dumps(options, ensure_ascii=False), model),
            )
            self.db.execute(
                "INSERT OR REPLACE INTO live_finals (session_id, segment_id, start_ms, end_ms, text, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, segment_id, start_ms, end_ms, text, now),
            )

    def live_finals(self, session_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT segment_id, start_ms, end_ms, text FROM live_finals WHERE session_id = ? ORDER BY segment_id",
            (session_id,),
        )
        return [dict(r) for r in rows]

    def delete_session(self, session_id: str) -> bool:
        with self._tx():
            return self.db.execute("DELETE FROM live_sessions WHERE session_id = ?", (session_id,)).rowcount > 0

    def search(self, text: str = "", since: float | None = None, until: float | None = None, limit: int = 200):
        """Captions whose text contains `text`, live finals and file segments, newest first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        since = since if since is not None else 0.0
        until = until if until is not None else 1e18
        rows = self.db.execute(
            "SELECT 'live' AS kind, l.session_id AS source, l.segment_id AS seq, l.start_ms, l.end_ms, l.text, "
            "l.created, ls.engine, ls.model "
            "FROM live_finals l JOIN live_sessions ls ON ls.session_id = l.session_id "
            "WHERE l.text LIKE ? ESCAPE '\\' AND l.created BETWEEN ? AND ? "
            "UNION ALL "
            "SELECT 'file', CAST(s.file_id AS TEXT), s.seq, s.start_ms, s.end_ms, s.text, j.created, f.engine, f.model "
            "FROM segments s JOIN files f ON f.id = s.file_id JOIN jobs j ON j.id = f.job_id "
            "WHERE s.text LIKE ? ESCAPE '\\' AND j.created BETWEEN ? AND ? "
            "ORDER BY created DESC, seq LIMIT ?",
            (pattern, since, until, pattern, since, until, limit),
        )
        return [dict(r) for r in rows]

    def backup(self, destination: str | Path) -> None:
        """A consistent copy while the server keeps writing (SQLite's online backup)."""
        target = sqlite3.connect(Path(destination).expanduser())
        try:
            self.db.backup(target)
        finally:
            target.close()

    def check_writable(self) -> None:
        """Raises if the database cannot take a write (read-only file, disk full)."""
        with self._tx():
            self.db.execute("CREATE TABLE IF NOT EXISTS _probe (x)")
            self.db.execute("DELETE FROM _probe")


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _file_row(row: sqlite3.Row) -> FileRow:
    return FileRow(
        row["id"], row["job_id"], row["name"], row["path"], row["status"], row["duration_s"], row["done_s"],
        row["next_seq"], row["error"], row["engine"], row["model"],
    )  # fmt: skip

"""SQLite store (WAL): batch jobs with per-file and per-segment progress, and the history of live
sessions' finals. Every call is synchronous and meant for one dedicated thread (see JobRunner in
jobs/runner.py), except `search`, which reads through its own connection on a thread of its own so
that a slow search never holds up writes; the schema is the crash-resume record: a segment is
committed the moment its text exists, and a file resumes after its last committed segment.

Ownership: jobs and live sessions carry `owner`, the caller's Principal.owner_id (a digest of its
token, never the token; "anonymous" with auth off and for rows made before owners were kept).
Calls that take `owner` see only that owner's rows; owner=None sees everything (admins).

Search: captions are indexed by SQLite FTS5 with the trigram tokenizer (case-insensitive substring
match, any script, Chinese included); triggers keep the index in step with every insert and delete.
A query under three characters cannot use trigrams and scans the newest rows first instead."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import queries as q

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    options TEXT NOT NULL,
    status TEXT NOT NULL,                  -- queued | running | done | failed | cancelled
    idempotency_key TEXT UNIQUE,
    started REAL,
    finished REAL,
    engine TEXT,                           -- the engine the job asked for (NULL: made before engines were chosen)
    owner TEXT NOT NULL DEFAULT 'anonymous',  -- owner id (a digest) of the token that made it
    request_hash TEXT                      -- what the request held: a reused Idempotency-Key must match it
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,                  -- queued | running | done | failed | cancelled
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
    model TEXT,
    owner TEXT NOT NULL DEFAULT 'anonymous'
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
# Made after the tables' columns are complete (an old database gets them added first).
INDEXES = """
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs(owner, created);
CREATE INDEX IF NOT EXISTS live_finals_by_created ON live_finals(created);
CREATE INDEX IF NOT EXISTS live_sessions_by_owner ON live_sessions(owner);
"""


def _search_index(table: str) -> str:
    """An FTS5 trigram index of `table`'s text; its triggers keep it in step (cascading deletes too)."""
    return f"""
CREATE VIRTUAL TABLE {table}_fts USING fts5(text, content='{table}', content_rowid='rowid', tokenize='trigram');
CREATE TRIGGER {table}_fts_insert AFTER INSERT ON {table} BEGIN
    INSERT INTO {table}_fts(rowid, text) VALUES (new.rowid, new.text); END;
CREATE TRIGGER {table}_fts_delete AFTER DELETE ON {table} BEGIN
    INSERT INTO {table}_fts({table}_fts, rowid, text) VALUES ('delete', old.rowid, old.text); END;
CREATE TRIGGER {table}_fts_update AFTER UPDATE ON {table} BEGIN
    INSERT INTO {table}_fts({table}_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
    INSERT INTO {table}_fts(rowid, text) VALUES (new.rowid, new.text); END;
"""


# Full-text index of every caption's text.
SEARCH_INDEX = {table: _search_index(table) for table in ("segments", "live_finals")}
# Columns added after the first release: a database made before them gets them on open.
ADDED_COLUMNS = {
    "jobs": ("engine TEXT", "owner TEXT NOT NULL DEFAULT 'anonymous'", "request_hash TEXT"),
    "files": ("engine TEXT", "model TEXT", "cut_words_end_ms INTEGER", "cut_words TEXT"),
    "live_sessions": ("model TEXT", "owner TEXT NOT NULL DEFAULT 'anonymous'"),
}
# Columns every release had: a table that lacks one belongs to some other program.
REQUIRED_COLUMNS = {
    "jobs": {"id", "created", "options", "status", "idempotency_key", "started", "finished"},
    "files": {"id", "job_id", "name", "path", "sha256", "status", "duration_s", "done_s", "next_seq", "error"},
    "segments": {"file_id", "seq", "start_ms", "end_ms", "text"},
    "live_sessions": {"session_id", "created", "updated", "engine", "options"},
    "live_finals": {"session_id", "segment_id", "start_ms", "end_ms", "text", "created"},
}
SEARCH_SHORTEST = 3  # characters: the trigram index answers queries at least this long
SEARCH_TIMEOUT_S = 10.0  # a search still running after this is stopped (SearchTimeout): it holds up other searches


class StoreError(Exception):
    """The database cannot be used (corrupt, not ours, unreadable, unreachable); str() is one line for
    the operator, naming the file or server and the setting."""

    def __init__(self, message: str, hint: str = "point jobs.db_path at another file, or move this one away") -> None:
        super().__init__(f"{message}; {hint}")


class SearchTimeout(Exception):
    """A search ran past its time and was stopped."""


class KeyConflict(Exception):
    """An Idempotency-Key reused for a request with other files or options."""


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
    # The last committed segment was cut for length: where its words end (ms into the file), so a
    # resumed file's next segment joins it as if never interrupted (streaming.cuts); else None.
    cut_words_end_ms: int | None = None
    # ... and its words, each with where it starts (ms into the file): the forced prefix of that join.
    cut_words: tuple[tuple[str, int], ...] = ()


class Store:
    def __init__(self, path: str | Path) -> None:
        """Opens (creating or upgrading) the database; StoreError when it is damaged or not ours."""
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from None
        try:
            self._open()
            # Searches read through their own connection (WAL: they never block the writer).
            self.reader = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self.reader.row_factory = sqlite3.Row
            self.reader.execute("PRAGMA query_only=ON")
        except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
            self.db.close()
            raise StoreError(f"{self.path} is not a usable history database: {exc}") from None
        except StoreError:
            self.db.close()
            raise

    def _open(self) -> None:
        self.db.row_factory = sqlite3.Row
        present_tables = {r["name"] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        others = sorted(t for t in present_tables if not t.startswith("sqlite_"))
        if others and not present_tables & REQUIRED_COLUMNS.keys():
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise StoreError(f"{self.path} is not a livecaption history database (it holds tables {shown})")
        for table in present_tables & REQUIRED_COLUMNS.keys():  # checked before anything is written
            present = {row["name"] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if missing := sorted(REQUIRED_COLUMNS[table] - present):
                raise StoreError(
                    f"{self.path} is not a livecaption history database (its table {table!r} has no column "
                    f"{', '.join(missing)})"
                )
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
        self.db.executescript(INDEXES)
        for table, script in SEARCH_INDEX.items():
            if f"{table}_fts" not in present_tables:  # new, or a database from before search was indexed
                rebuild = f"INSERT INTO {table}_fts({table}_fts) VALUES ('rebuild');"
                self.db.executescript(f"BEGIN IMMEDIATE; {script} {rebuild} COMMIT;")

    def close(self) -> None:
        self.reader.close()
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
        owner: str = "anonymous",
        request_hash: str | None = None,
    ) -> tuple[str, bool]:
        """files: (name, stored path, sha256); engine: the one its files ask for. Returns (job id, made
        now): an existing job for a key this owner used before for the same request (`request_hash`);
        KeyConflict when that key came with another request."""
        key = f"{owner}:{idempotency_key}" if idempotency_key else None  # keys are per owner
        with self._tx():
            if key:
                row = self.db.execute("SELECT id, request_hash FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
                if row:
                    if row["request_hash"] not in (None, request_hash):
                        raise KeyConflict(idempotency_key)
                    return row["id"], False
            job_id = uuid.uuid4().hex[:12]
            self.db.execute(
                "INSERT INTO jobs (id, created, options, status, idempotency_key, engine, owner, request_hash) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, time.time(), json.dumps(options, ensure_ascii=False), key, engine, owner, request_hash),
            )
            self.db.executemany(q.INSERT_FILE, [(job_id, name, path, digest) for name, path, digest in files])
        return job_id, True

    def job(self, job_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """The job with its files; None when there is none, or it is not `owner`'s (None: anyone's)."""
        row = self.db.execute(
            "SELECT * FROM jobs WHERE id = ? AND (? IS NULL OR owner = ?)", (job_id, owner, owner)
        ).fetchone()
        if row is None:
            return None
        job = dict(row)
        job.pop("request_hash", None)
        key = job.get("idempotency_key")
        job["idempotency_key"] = key.split(":", 1)[1] if key and key.startswith(f"{job['owner']}:") else key
        job["options"] = json.loads(job["options"])
        job["files"] = [dict(r) for r in self.db.execute(q.JOB_FILES, (job_id,))]
        return job

    def jobs(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]:
        rows = self.db.execute(q.JOB_IDS, (owner, owner, limit)).fetchall()
        # (a job deleted between the two queries is left out, not listed as None)
        return [job for r in rows if (job := self.job(r["id"])) is not None]

    def pending_files(self) -> list[FileRow]:
        """Files still to transcribe, oldest job first; `running` ones were cut off by a crash."""
        return [as_file_row(r) for r in self.db.execute(q.PENDING_FILES)]

    def pending_counts(self) -> dict[str, int]:
        """Files still to transcribe: how many are queued and how many running."""
        return pending_counts(self.db.execute(q.PENDING_COUNTS))

    def claim_file(self, skip: Collection[int] = ()) -> FileRow | None:
        """The oldest pending file not in `skip`: one process uses this database, so holding a file
        needs no record (a `running` file here was cut off by a crash or a stop)."""
        return next((row for row in self.pending_files() if row.id not in skip), None)

    def renew_leases(self, file_ids: Collection[int]) -> set[int]:
        """Of `file_ids`, those still to transcribe (not cancelled, finished or deleted meanwhile)."""
        ids = list(file_ids)
        rows = self.db.execute(
            f"SELECT id FROM files WHERE id IN ({','.join('?' * len(ids))}) AND status IN ('queued', 'running')", ids
        )
        return {row["id"] for row in rows}

    def file(self, file_id: int, owner: str | None = None) -> FileRow | None:
        row = self.db.execute(q.FILE, (file_id, owner, owner)).fetchone()
        return as_file_row(row) if row else None

    def start_file(self, file_id: int, duration_s: float | None, engine: str, model: str) -> None:
        """The file is being transcribed by `engine` (`model`): recorded with its results."""
        with self._tx():
            self.db.execute(
                "UPDATE files SET status = 'running', duration_s = COALESCE(?, duration_s), engine = ?, model = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (duration_s, engine, model, file_id),
            )
            self.db.execute(q.JOB_STARTED, (time.time(), file_id))

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
    ) -> None:
        """One decoded segment and the file's new resume point, atomically. `cut_words_end_ms`: the
        segment was cut for length and its words end there (ms into the file); `cut_words`: its
        words, each with where it starts (ms into the file)."""
        with self._tx():
            self.db.execute(q.INSERT_SEGMENT, (file_id, seq, start_ms, end_ms, text))
            self.db.execute(
                "UPDATE files SET next_seq = ?, done_s = ?, cut_words_end_ms = ?, cut_words = ? "
                "WHERE id = ? AND next_seq = ?",
                (seq + 1, done_s, cut_words_end_ms, q.encode_cut_words(cut_words), file_id, seq),
            )

    def finish_file(self, file_id: int, error: str | None = None) -> None:
        with self._tx():
            self.db.execute(
                "UPDATE files SET status = ?, error = ?, "
                "done_s = CASE WHEN ? IS NULL THEN COALESCE(duration_s, done_s) ELSE done_s END "
                "WHERE id = ? AND status IN ('queued', 'running')",  # never over a cancel
                ("failed" if error else "done", error, error, file_id),
            )
            self.db.execute(q.JOB_FINISHED, (time.time(), file_id))

    def segments(self, file_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(q.SEGMENTS, (file_id,))]

    def cancel_job(self, job_id: str) -> bool:
        """Marks the job and its unfinished files cancelled, so that nothing resumes them (not even a
        restart); what was committed stays. False when the job had already finished."""
        with self._tx():
            changed = self.db.execute(q.CANCEL_JOB, (time.time(), job_id)).rowcount
            self.db.execute(q.CANCEL_FILES, (job_id,))
        return changed > 0

    def delete_job(self, job_id: str) -> list[str]:
        """Deletes the job and its results; returns the stored file paths for the caller to remove."""
        paths = [r["path"] for r in self.db.execute("SELECT path FROM files WHERE job_id = ?", (job_id,))]
        with self._tx():
            self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return paths

    # --- live history -------------------------------------------------------------------------
    def add_live_final(self, session_id: str, segment_id: int, start_ms: int, end_ms: int, text: str,
                       engine: str, options: dict[str, Any], model: str | None = None,
                       owner: str = "anonymous") -> None:  # fmt: skip
        self.add_live_finals([(session_id, segment_id, start_ms, end_ms, text, engine, options, model, owner)])

    def add_live_finals(self, finals: list[tuple]) -> None:
        """Many add_live_final argument tuples in one transaction. A session belongs to the owner
        that recorded its first final: finals another owner sends under its id are not kept."""
        now = time.time()
        with self._tx():
            for session_id, segment_id, start_ms, end_ms, text, engine, options, model, owner in finals:
                options_json = json.dumps(options, ensure_ascii=False)
                self.db.execute(q.UPSERT_LIVE_SESSION, (session_id, now, now, engine, options_json, model, owner))
                self.db.execute(
                    q.UPSERT_LIVE_FINAL, (session_id, segment_id, start_ms, end_ms, text, now, session_id, owner)
                )

    def live_finals(self, session_id: str, owner: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(q.LIVE_FINALS, (session_id, owner, session_id, owner))]

    def delete_session(self, session_id: str, owner: str | None = None) -> bool:
        with self._tx():
            return self.db.execute(q.DELETE_SESSION, (session_id, owner, owner)).rowcount > 0

    def search(self, text: str = "", since: float | None = None, until: float | None = None, limit: int = 200,
               owner: str | None = None, timeout_s: float = SEARCH_TIMEOUT_S) -> list[dict[str, Any]]:  # fmt: skip
        """Captions whose text contains `text` (any case), live finals and file segments, newest first;
        only `owner`'s (None: everyone's). Reads through its own connection: call it from a thread
        other than the writer's, one search at a time. SearchTimeout after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        self.reader.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)  # non-zero: interrupt
        try:
            return self._search(text, since, until, limit, owner)
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise SearchTimeout(f"the search ran longer than {timeout_s:g} s") from None
            raise
        finally:
            self.reader.set_progress_handler(None, 0)

    def _search(self, text: str, since: float | None, until: float | None, limit: int, owner: str | None):
        since = since if since is not None else 0.0
        until = until if until is not None else 1e18
        text = text.strip()
        if len(text) >= SEARCH_SHORTEST:
            match = '"' + text.replace('"', '""') + '"'  # one phrase: FTS5 query syntax never applies
            live_from = "live_finals_fts x JOIN live_finals l ON l.rowid = x.rowid"
            file_from = "segments_fts x JOIN segments s ON s.rowid = x.rowid"
            where, args = "x.text MATCH ?", (match,)
        else:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            live_from, file_from = "live_finals l", "segments s"
            where, args = "{}.text LIKE ? ESCAPE '\\'", (pattern,)
        live = self.reader.execute(
            "SELECT 'live' AS kind, l.session_id AS source, l.segment_id AS seq, l.start_ms, l.end_ms, l.text, "
            f"l.created, ls.engine, ls.model FROM {live_from} "
            "JOIN live_sessions ls ON ls.session_id = l.session_id "
            f"WHERE {where.format('l')} AND l.created BETWEEN ? AND ? AND (? IS NULL OR ls.owner = ?) "
            "ORDER BY l.created DESC, l.segment_id LIMIT ?",
            (*args, since, until, owner, owner, limit),
        ).fetchall()
        files = self.reader.execute(
            "SELECT 'file' AS kind, CAST(s.file_id AS TEXT) AS source, s.seq, s.start_ms, s.end_ms, s.text, "
            f"j.created, f.engine, f.model FROM {file_from} "
            "JOIN files f ON f.id = s.file_id JOIN jobs j ON j.id = f.job_id "
            f"WHERE {where.format('s')} AND j.created BETWEEN ? AND ? AND (? IS NULL OR j.owner = ?) "
            "ORDER BY j.created DESC, s.seq LIMIT ?",
            (*args, since, until, owner, owner, limit),
        ).fetchall()
        rows = sorted((dict(r) for r in (*live, *files)), key=lambda r: (-r["created"], r["seq"]))
        return rows[:limit]

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


def as_file_row(row: sqlite3.Row | dict) -> FileRow:
    return FileRow(
        row["id"], row["job_id"], row["name"], row["path"], row["status"], row["duration_s"], row["done_s"],
        row["next_seq"], row["error"], row["engine"], row["model"], row["cut_words_end_ms"],
        q.decode_cut_words(row["cut_words"]),
    )  # fmt: skip


def pending_counts(rows) -> dict[str, int]:
    """PENDING_COUNTS' rows as {"queued": n, "running": m}, zeros included."""
    counts = {"queued": 0, "running": 0}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts

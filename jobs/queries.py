"""The statements both stores run word for word (jobs/store.py on SQLite, jobs/pg_store.py on
PostgreSQL, which swaps each `?` for `%s`): one text for the rules both keep (who sees what, when a
job is done, which finals a session keeps). What differs stays with each store: the schema, search,
and PostgreSQL's leases. `CAST(? AS TEXT) IS NULL`: PostgreSQL must know a parameter's type."""

import json
from collections.abc import Sequence

LIVE = "('queued', 'running')"  # statuses of a job or file still to transcribe
FILE_COLUMNS = "f.id, f.job_id, f.name, f.path, f.sha256, f.status, f.duration_s, f.done_s, f.next_seq, f.error, " \
               "f.engine, f.model"  # fmt: skip
# A file as the runner reads it: also where a segment cut for length, if the last committed one was,
# had its words end, and its words (not shown in job listings).
FILE_ROW_COLUMNS = f"{FILE_COLUMNS}, f.cut_words_end_ms, f.cut_words"


def encode_cut_words(words: Sequence[tuple[str, int]]) -> str | None:
    """files.cut_words: [[word, start_ms], ...] as JSON; None when there are none."""
    return json.dumps([[word, start_ms] for word, start_ms in words], ensure_ascii=False) if words else None


def decode_cut_words(text: str | None) -> tuple[tuple[str, int], ...]:
    return tuple((str(word), int(start_ms)) for word, start_ms in json.loads(text)) if text else ()


INSERT_FILE = "INSERT INTO files (job_id, name, path, sha256, status) VALUES (?, ?, ?, ?, 'queued')"
JOB_FILES = (
    f"SELECT {FILE_COLUMNS}, (SELECT COUNT(*) FROM segments s WHERE s.file_id = f.id) AS segments "
    "FROM files f WHERE f.job_id = ? ORDER BY f.id"
)
JOB_IDS = "SELECT id FROM jobs WHERE CAST(? AS TEXT) IS NULL OR owner = ? ORDER BY created DESC LIMIT ?"
PENDING_FILES = (
    f"SELECT {FILE_ROW_COLUMNS} FROM files f JOIN jobs j ON j.id = f.job_id "
    f"WHERE f.status IN {LIVE} AND j.status IN {LIVE} ORDER BY j.created, f.id"
)
# What /healthz and /metrics report as queued work: counts only (the partial index files_pending on
# PostgreSQL), so every front end may ask every second or two.
PENDING_COUNTS = (
    "SELECT f.status, COUNT(*) AS n FROM files f JOIN jobs j ON j.id = f.job_id "
    f"WHERE f.status IN {LIVE} AND j.status IN {LIVE} GROUP BY f.status"
)
FILE = (
    f"SELECT {FILE_ROW_COLUMNS} FROM files f JOIN jobs j ON j.id = f.job_id "
    "WHERE f.id = ? AND (CAST(? AS TEXT) IS NULL OR j.owner = ?)"
)
JOB_STARTED = (
    "UPDATE jobs SET status = 'running', started = COALESCE(started, ?) "
    f"WHERE id = (SELECT job_id FROM files WHERE id = ?) AND status IN {LIVE}"
)
INSERT_SEGMENT = "INSERT INTO segments (file_id, seq, start_ms, end_ms, text) VALUES (?, ?, ?, ?, ?)"
# done when every file is finished; failed when none of them could be transcribed
JOB_FINISHED = (
    "UPDATE jobs SET finished = ?, status = CASE WHEN EXISTS "
    "(SELECT 1 FROM files WHERE job_id = jobs.id AND status = 'done') THEN 'done' ELSE 'failed' END "
    f"WHERE id = (SELECT job_id FROM files WHERE id = ?) AND status IN {LIVE} "
    f"AND NOT EXISTS (SELECT 1 FROM files WHERE job_id = jobs.id AND status IN {LIVE})"
)
SEGMENTS = "SELECT seq, start_ms, end_ms, text FROM segments WHERE file_id = ? ORDER BY seq"
CANCEL_JOB = f"UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ? AND status IN {LIVE}"
CANCEL_FILES = f"UPDATE files SET status = 'cancelled', error = 'cancelled' WHERE job_id = ? AND status IN {LIVE}"
# A session belongs to the owner that recorded its first final: another owner's finals are not kept.
UPSERT_LIVE_SESSION = (
    "INSERT INTO live_sessions (session_id, created, updated, engine, options, model, owner) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET updated = excluded.updated "
    "WHERE live_sessions.owner = excluded.owner"
)
# An upsert, not INSERT OR REPLACE: REPLACE's implicit delete skips SQLite's search index trigger.
UPSERT_LIVE_FINAL = (
    "INSERT INTO live_finals (session_id, segment_id, start_ms, end_ms, text, created) "
    "SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM live_sessions WHERE session_id = ? AND owner = ?) "
    "ON CONFLICT (session_id, segment_id) DO UPDATE SET "
    "start_ms = excluded.start_ms, end_ms = excluded.end_ms, text = excluded.text, created = excluded.created"
)
LIVE_FINALS = (
    "SELECT segment_id, start_ms, end_ms, text FROM live_finals WHERE session_id = ? AND "
    "(CAST(? AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM live_sessions WHERE session_id = ? AND owner = ?)) "
    "ORDER BY segment_id"
)
DELETE_SESSION = "DELETE FROM live_sessions WHERE session_id = ? AND (CAST(? AS TEXT) IS NULL OR owner = ?)"

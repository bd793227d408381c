"""HTTP API for batch jobs, history and exports (aiohttp handlers; the work is in jobs.runner and jobs.store).

Jobs, their files and live sessions' history belong to the token that made them (its principal
name, never the token): other tokens get 404 for them and never see them listed or found; admin
tokens see everything, and so does everyone while auth is off. A database failure answers 503 and
leaves no upload behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from jobs import exports
from jobs.storage import DATABASE_ERRORS
from jobs.store import KeyConflict, SearchTimeout
from server.auth import ANONYMOUS
from server.guard import PRINCIPAL
from server.protocol import ProtocolError, is_language_code, parse_hotwords
from settings.config import ENGINES

log = logging.getLogger(__name__)

FILE_FORMATS = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt", "json": "application/json"}
JOB_FORMATS = {"zip": "application/zip", "csv": "text/csv", "json": "application/json"}
MAX_FILES_PER_JOB = 1000
MAX_FIELDS = 20  # form fields next to the files (options, engine, ...)
MAX_FIELD_BYTES = 100_000  # one such field; the options JSON is far smaller
FINISHED = ("done", "failed", "cancelled")


# What aiohttp's multipart reader raises for a body that is not well formed: the client's fault, a 400.
MALFORMED_MULTIPART = (ValueError, LookupError, RuntimeError, HttpProcessingError)


Files = list[tuple[str, str, str]]  # (name, path, SHA-256 of the content) per file of a job


async def form_parts(reader: MultipartReader) -> AsyncIterator[BodyPartReader]:
    """The parts of a multipart/form-data body. A part that is itself multipart (RFC 2388's
    multipart/mixed for several files under one name) is refused as malformed: senders today
    send each file as its own part, and the nested reader has none of a part's fields."""
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ValueError("a form part is itself multipart; send each file as its own form-data part")
        yield part


class UploadTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"upload passed {size} bytes")
        self.size = size


async def save_part(part, target: Path, limit: int, durable: bool = False) -> str:
    """Stream one multipart file to `target`; returns its SHA-256. Past `limit` bytes the partial
    file is removed and UploadTooLarge raised. `durable`: fsync before returning."""
    digest, size = hashlib.sha256(), 0
    with open(target, "wb") as out:
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size > limit:
                out.close()
                target.unlink(missing_ok=True)
                raise UploadTooLarge(size)
            digest.update(chunk)
            out.write(chunk)
        if durable:
            out.flush()
            os.fsync(out.fileno())
    return digest.hexdigest()


# What Python's quote(name, safe="") leaves: a name made only of these and %XX escapes was
# percent-encoded by its sender (aiohttp's FormData does that to every file name by default).
_PERCENT_ENCODED = re.compile(r"[A-Za-z0-9_.~-]*(?:%[0-9A-Fa-f]{2}[A-Za-z0-9_.~-]*)+")


def upload_name(part) -> str | None:
    """The name a multipart file part was sent with, as its user typed it: RFC 7578's UTF-8
    `filename` and RFC 5987's `filename*` (which aiohttp decodes), and a `filename` that its sender
    percent-encoded ("%E4%BC%9A%E8%AE%AE.wav" -> "会议.wav"; aiohttp's FormData and tools built on
    it). None for a part that is not a file."""
    name = part.filename
    if name is None:
        return None
    # Bytes that were not UTF-8 arrive as lone surrogates, which no database or file system takes.
    name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if _PERCENT_ENCODED.fullmatch(name):
        try:
            decoded = unquote(name, errors="strict")
        except UnicodeDecodeError:  # not UTF-8 underneath: kept as sent
            decoded = name
        if decoded.isprintable():
            name = decoded
    return name[:255]


def find_engine(executor, value: str) -> str | None:
    """The loaded engine that `value` names, by engine name ("funasr") or by its model as
    /api/engines or a file's record spells it, or as the model that decodes its files is known
    ("paraformer-zh", "SenseVoiceSmall", "large-v3", "base"); None when no loaded engine matches."""
    wanted = value.strip()
    for name, engine in executor.engines.items():
        if wanted.lower() == name or wanted in (engine.model, engine.file_model):
            return name
    for name, engine in executor.engines.items():
        if wanted.lower() in _file_model_names(engine):
            return name
    return None


def _file_model_names(engine) -> set[str]:
    """Lower-case names of the model that decodes an engine's files: "iic/SenseVoiceSmall" and
    "sensevoicesmall"; "whisper-base (embedded, ...)", "whisper-base" and "base"; a directory's
    last component. Its punctuation or streaming models are not among them."""
    model = engine.file_model.split(" + ")[0]
    full = model.split(" (")[0].strip().rstrip("/\\")
    tail = re.split(r"[/\\]", full)[-1]
    names = {full, tail, tail.removeprefix("faster-whisper-"), tail.removeprefix("whisper-")}
    return {n.lower() for n in names if n}


class UnknownEngine(ValueError):
    """A request named an engine (or one of its models) that this server has not loaded."""


# Model names this server's engines could run ([funasr] and [whisper] models), lower case: a request
# naming one that is not loaded is refused (UnknownEngine) rather than answered by another model.
_OWN_MODEL_NAMES = re.compile(
    r"(.*/)?(paraformer.*|sensevoice.*|fun-?asr.*|fsmn.*|ct-punc.*|.*faster-whisper.*|distil-.*"
    r"|(tiny|base|small|medium)(\.en)?|large(-v[1-3])?|turbo|large-v3-turbo)"
)


def requested_engine(executor, value: str, *, foreign_names: bool = False) -> str | None:
    """The loaded engine a request names by `value` (an engine name such as "funasr", or its model
    as /api/engines spells it); None for an empty value (the live engine answers). One rule for
    /api/jobs and the OpenAI endpoint: a name of this server's engines or their models that is not
    loaded is UnknownEngine. `foreign_names` (the OpenAI endpoint): any other name ("whisper-1",
    "gpt-4o-transcribe", a tool's own default) is None, the live engine, as OpenAI's clients send a
    model whatever server they talk to; without it, every name that matches no loaded engine is
    UnknownEngine."""
    wanted = value.strip()
    if not wanted:
        return None
    name = find_engine(executor, wanted)
    if name is not None:
        return name
    if foreign_names and wanted.lower() not in ENGINES and not _OWN_MODEL_NAMES.fullmatch(wanted.lower()):
        return None
    raise UnknownEngine(wanted)


def loaded_engines(executor) -> str:
    """The loaded engines for an error message: "whisper (model; live), funasr (model)"."""
    live = executor.engine.name
    return ", ".join(f"{n} ({e.model}{'; live' if n == live else ''})" for n, e in executor.engines.items())


class JobsApi:
    def __init__(self, runner, config) -> None:
        self.runner = runner
        self.executor = runner.executor
        self.config = config.jobs
        self.max_segment_s = config.endpointing.max_segment_s
        self.upload_dir = Path(self.config.upload_dir).expanduser()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/engines", self.engines)
        app.router.add_post("/api/jobs", self.submit)
        app.router.add_get("/api/jobs", self.list_jobs)
        app.router.add_get("/api/jobs/{job_id}", self.get_job)
        app.router.add_delete("/api/jobs/{job_id}", self.delete_job)
        app.router.add_post("/api/jobs/{job_id}/cancel", self.cancel_job)
        app.router.add_get("/api/jobs/{job_id}/export.{fmt}", self.export_job)
        app.router.add_get("/api/files/{file_id:\\d+}/export.{fmt}", self.export_file)
        app.router.add_get("/api/history", self.history)
        app.router.add_get("/api/sessions/{session_id}/export.{fmt}", self.export_session)
        app.router.add_delete("/api/sessions/{session_id}", self.delete_session)

    # --- submission -----------------------------------------------------------------------------
    async def db(self, call, *args):
        """A store call on the runner's database thread; a failing database is a 503, not a 500."""
        try:
            return await self.runner.db(call, *args)
        except DATABASE_ERRORS:  # reported once on /healthz and in the log by the runner
            raise _bad("the history database is not available; try again later", 503) from None

    async def submit(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and len(key) > 200:
            raise _bad("Idempotency-Key is longer than 200 characters")
        if key is not None and not key.isprintable():  # also bytes that were not UTF-8 (surrogates)
            raise _bad("Idempotency-Key must be printable UTF-8 text")
        uploaded: Path | None = None
        if request.content_type == "application/json":
            files, options = await self._server_paths(request)
        elif request.content_type == "multipart/form-data":
            uploaded = self.upload_dir / uuid.uuid4().hex
            files, options = await self._uploads(request, uploaded)
        else:
            raise _bad('send multipart/form-data with files, or JSON {"paths": [...], "options": {...}}')
        try:
            job_id, duplicates = await self._create(request, files, options, key, uploaded)
        except BaseException:  # refused, or the database failed: no upload is left behind
            if uploaded is not None:
                shutil.rmtree(uploaded, ignore_errors=True)
            raise
        job = await self.db(self.runner.store.job, job_id)  # the job holds its uploads from here on
        body = {
            "job_id": job_id,
            "engine": job["engine"],
            "files": [{"id": f["id"], "name": f["name"]} for f in job["files"]],
            "duplicates": [name for name, _, _ in duplicates],  # same content twice in one job: kept once
        }
        return web.json_response(body, status=201)

    async def _create(
        self, request: web.Request, files: Files, options: dict[str, Any], key: str | None, uploaded: Path | None
    ) -> tuple[str, Files]:
        """The job for these files (a new one, or the one a repeated Idempotency-Key made) and the
        duplicates left out of it."""
        unique: Files = []
        duplicates: Files = []
        seen: set[str] = set()
        for name, path, digest in files:
            (duplicates if digest in seen else unique).append((name, path, digest))
            seen.add(digest)
        if not unique:
            raise _bad("no files in the request")
        if uploaded is not None:
            for _, path, _ in duplicates:  # transcribed once, under the first copy: no second copy is kept
                Path(path).unlink(missing_ok=True)
        engine = options.pop("engine")  # kept in its own column: what the job asked for
        # What the job would hold, so that a reused Idempotency-Key with other files or options is refused.
        fingerprint = json.dumps([[(n, d) for n, _, d in unique], options, engine], sort_keys=True, ensure_ascii=False)
        request_hash = hashlib.sha256(fingerprint.encode()).hexdigest()
        owner = _principal(request).owner_id
        try:
            job_id, made = await self.db(
                self.runner.store.create_job, unique, options, key, engine, owner, request_hash
            )
        except KeyConflict:
            raise _bad("this Idempotency-Key was used for a request with other files or options", 422,
                       code="idempotency_conflict") from None  # fmt: skip
        if made:
            self.runner.wake()
        elif uploaded is not None:
            shutil.rmtree(uploaded, ignore_errors=True)  # a repeat: the first request's files are the job's
        return job_id, duplicates

    async def _uploads(self, request: web.Request, folder: Path) -> tuple[Files, dict[str, Any]]:
        try:
            return await self._store_uploads(request, folder)
        except MALFORMED_MULTIPART as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise _bad(f"the multipart/form-data body is malformed: {str(exc)[:200]!r}") from None
        except BaseException:  # a refused request leaves nothing behind
            shutil.rmtree(folder, ignore_errors=True)
            raise

    async def _store_uploads(self, request: web.Request, folder: Path) -> tuple[Files, dict[str, Any]]:
        files: Files = []
        fields: dict[str, str] = {}
        limit = self.config.max_upload_mb * 1024 * 1024
        async for part in form_parts(await request.multipart()):
            filename = upload_name(part)
            if filename is None:
                if len(fields) >= MAX_FIELDS:
                    raise _bad(f"at most {MAX_FIELDS} form fields besides the files")
                data = bytearray()
                while chunk := await part.read_chunk(1 << 16):  # never a whole field in memory unread
                    data += chunk
                    if len(data) > MAX_FIELD_BYTES:
                        raise _bad(f"form field {str(part.name)[:50]!r} is longer than {MAX_FIELD_BYTES} bytes")
                fields[part.name or ""] = part.decode(bytes(data)).decode("utf-8", "replace")
                continue
            if len(files) >= MAX_FILES_PER_JOB:
                raise _bad(f"at most {MAX_FILES_PER_JOB} files per job")
            name = exports.safe_name(filename) or "upload"
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{len(files):04d}-{name}"
            try:
                digest = await save_part(part, target, limit, durable=True)  # durable before the ack
            except UploadTooLarge as exc:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=limit,
                    actual_size=exc.size,
                    text=json.dumps(
                        {
                            "error": f"{filename!r} is larger than max_upload_mb ({self.config.max_upload_mb} MB)",
                            "code": "too_large",
                        }
                    ),
                    content_type="application/json",
                ) from None
            files.append((filename, str(target), digest))
        if folder.exists():
            descriptor = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(descriptor)  # the directory entries too
            finally:
                os.close(descriptor)
        if not fields.get("options"):
            return files, self._options(fields)
        try:
            options = json.loads(fields["options"])
        except json.JSONDecodeError:
            raise _bad("the options field is not valid JSON") from None
        if isinstance(options, dict):  # `-F engine=...` next to an options JSON counts too
            options = {**{k: fields[k] for k in ("engine", "model", "vad") if fields.get(k)}, **options}
        return files, self._options(options)

    async def _server_paths(self, request: web.Request) -> tuple[Files, dict[str, Any]]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise _bad("the request body is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("paths"), list):
            raise _bad('JSON body must be {"paths": ["file.wav", ...], "options": {...}}')
        if not self.config.allowed_dir:
            raise _bad("server-side paths are disabled (jobs.allowed_dir is empty); upload the files instead", 403)
        root = Path(self.config.allowed_dir).expanduser().resolve()
        files: Files = []
        for raw in body["paths"][: MAX_FILES_PER_JOB + 1]:
            if not isinstance(raw, str) or not raw or "\x00" in raw:
                raise _bad(f"bad path {str(raw)[:100]!r}")
            path = (root / raw).resolve()
            if not path.is_relative_to(root):
                raise _bad(f"path {raw[:200]!r} is outside the allowed directory", 403)
            if not path.is_file():
                raise _bad(f"no such file in the allowed directory: {raw[:200]!r}", 404)
            digest = await asyncio.get_running_loop().run_in_executor(None, _sha256, path)
            files.append((path.name, str(path), digest))
        if len(files) > MAX_FILES_PER_JOB:
            raise _bad(f"at most {MAX_FILES_PER_JOB} files per job")
        return files, self._options(body.get("options") or {})

    def _options(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise _bad("options must be a JSON object")
        options: dict[str, Any] = {}
        if raw.get("language") not in (None, ""):
            language = raw["language"]
            if not is_language_code(language):
                raise _bad(f"language must be a code such as 'en'; got {str(language)[:20]!r}")
            options["language"] = language.lower()
        try:
            options["hotwords"] = [list(h) for h in parse_hotwords(raw.get("hotwords", ""))]
        except ProtocolError as exc:
            raise _bad(exc.message) from None
        itn = raw.get("itn", True)
        if isinstance(itn, str):
            itn = itn.lower() not in ("false", "0", "no")
        options["itn"] = bool(itn)
        vad = raw.get("vad", True)
        if isinstance(vad, str):
            vad = vad.lower() not in ("false", "0", "no", "off")
        if not vad:  # clips cut beforehand: no VAD, each file one segment (cut at max_segment_s)
            options["vad"] = False  # kept only when off: jobs made before this option stay as they were
        if raw.get("max_segment_s") not in (None, ""):
            try:
                value = float(raw["max_segment_s"])
            except (TypeError, ValueError):
                value = float("nan")
            if not 1 <= value <= self.max_segment_s:
                raise _bad(f"max_segment_s must be a number 1..{self.max_segment_s:g}")
            options["max_segment_s"] = value
        options["engine"] = self._engine(raw)
        if "language" in options and (
            problem := self.executor.engines[options["engine"]].language_problem(options["language"])
        ):
            raise _bad(problem, code="unsupported_language")  # as a stream is refused: never text in another language
        return options

    def _engine(self, raw: dict[str, Any]) -> str:
        """The engine the job asks for by `engine` and/or `model` (the same thing named two ways);
        the live engine when it names none."""
        chosen = set()
        for key in ("engine", "model"):
            value = raw.get(key)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or len(value) > 300:
                raise _bad(f"{key} must be the name of an engine")
            try:
                name = requested_engine(self.executor, value)
            except UnknownEngine:
                name = None
            if name is None:
                raise _bad(
                    f"{key} {value[:100]!r} is not available on this server; choose one of: "
                    f"{loaded_engines(self.executor)}",
                    code="unknown_engine",
                )
            chosen.add(name)
        if len(chosen) > 1:
            raise _bad(f"engine and model name different engines ({', '.join(sorted(chosen))}); send one of them")
        return chosen.pop() if chosen else self.executor.engine.name

    async def engines(self, request: web.Request) -> web.Response:
        """The engines a job may name; the live one is the default."""
        live = self.executor.engine.name
        listed = [{"name": name, "model": engine.model, "device": engine.device, "live": name == live}
                  for name, engine in self.executor.engines.items()]  # fmt: skip
        return web.json_response({"default": live, "engines": listed})

    # --- progress -------------------------------------------------------------------------------
    async def list_jobs(self, request: web.Request) -> web.Response:
        jobs = await self.db(self.runner.store.jobs, 100, _owner(request))
        return web.json_response({"jobs": [progress(job) for job in jobs]})

    async def get_job(self, request: web.Request) -> web.Response:
        return web.json_response(progress(await self._job(request)))

    async def cancel_job(self, request: web.Request) -> web.Response:
        """Stops a queued or running job for good (a restart does not resume it); what was
        transcribed before stays. 409 for a job that had finished."""
        job = await self._job(request)
        if job["status"] in ("done", "failed"):
            raise _bad(f"the job has already finished ({job['status']}); nothing to cancel", 409)
        if job["status"] != "cancelled":
            try:
                await self.runner.cancel_job(job["id"], [f["id"] for f in job["files"]])
            except DATABASE_ERRORS:
                raise _bad("the history database is not available; try again later", 503) from None
            log.info("job %s cancelled", job["id"])
        return web.json_response(progress(await self._job(request)))

    async def delete_job(self, request: web.Request) -> web.Response:
        """Deletes a job and its results; a job still running is cancelled first."""
        job = await self._job(request)
        if job["status"] not in FINISHED or any(f["id"] in self.runner.active for f in job["files"]):
            try:
                await self.runner.cancel_job(job["id"], [f["id"] for f in job["files"]])
            except DATABASE_ERRORS:
                raise _bad("the history database is not available; try again later", 503) from None
        paths = await self.db(self.runner.store.delete_job, job["id"])
        for path in paths:
            if Path(path).is_relative_to(self.upload_dir):
                Path(path).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # the job's upload folder, once empty
                    Path(path).parent.rmdir()
        return web.json_response({"deleted": job["id"]})

    async def _job(self, request: web.Request) -> dict[str, Any]:
        job_id = request.match_info["job_id"]
        job = await self.db(self.runner.store.job, job_id, _owner(request)) if len(job_id) <= 64 else None
        if job is None:
            raise _bad("no such job", 404)
        return job

    # --- exports --------------------------------------------------------------------------------
    async def export_job(self, request: web.Request) -> web.Response:
        fmt = _format(request, JOB_FORMATS)
        job = await self._job(request)
        results = {}
        names = exports.unique_names([file["name"] for file in job["files"]])  # two "a.wav" stay two files
        for name, file in zip(names, job["files"]):
            results[name] = await self.db(self.runner.store.segments, file["id"])
        if fmt == "zip":
            body: bytes | str = exports.zip_job(results)
        elif fmt == "csv":
            body = exports.to_csv(results)
        else:
            metadata = {"job_id": job["id"], "engine": job["engine"], "options": job["options"]}
            body = exports.job_json(results, {**metadata, "status": job["status"]})
        return _download(body, f"job-{job['id']}.{fmt}", JOB_FORMATS[fmt])

    async def export_file(self, request: web.Request) -> web.Response:
        fmt = _format(request, FILE_FORMATS)
        digits = request.match_info["file_id"]  # digits only (the route); SQLite's integers end at 19
        row = await self.db(self.runner.store.file, int(digits), _owner(request)) if len(digits) <= 18 else None
        if row is None:
            raise _bad("no such file", 404)
        segments = await self.db(self.runner.store.segments, row.id)
        return _download(_render(fmt, segments, {"file": row.name}), f"{exports.safe_name(row.name)}.{fmt}",
                         FILE_FORMATS[fmt])  # fmt: skip

    async def export_session(self, request: web.Request) -> web.Response:
        fmt = _format(request, FILE_FORMATS)
        session_id = request.match_info["session_id"]
        finals = await self.db(self.runner.store.live_finals, session_id, _owner(request))
        if not finals:
            raise _bad("no such session in the history", 404)
        return _download(_render(fmt, finals, {"session_id": session_id}), f"{exports.safe_name(session_id)}.{fmt}",
                         FILE_FORMATS[fmt])  # fmt: skip

    async def history(self, request: web.Request) -> web.Response:
        try:
            since = float(request.query["since"]) if request.query.get("since") else None
            until = float(request.query["until"]) if request.query.get("until") else None
        except ValueError:
            raise _bad("since/until must be Unix times in seconds") from None
        if any(t is not None and not math.isfinite(t) for t in (since, until)):
            raise _bad("since/until must be Unix times in seconds")
        text = request.query.get("q", "").replace("\x00", "")[:200]  # FTS5 reads a NUL as the end of the query
        try:
            rows = await self.runner.search(text, since, until, owner=_owner(request))
        except DATABASE_ERRORS:
            raise _bad("the history database is not available; try again later", 503) from None
        except SearchTimeout as exc:
            raise _bad(f"{exc}; search for longer words or a shorter time span", 503, code="search_timeout") from None
        return web.json_response({"results": rows})

    async def delete_session(self, request: web.Request) -> web.Response:
        session_id = request.match_info["session_id"]
        if not await self.db(self.runner.store.delete_session, session_id, _owner(request)):
            raise _bad("no such session in the history", 404)
        return web.json_response({"deleted": session_id})


def _principal(request: web.Request):
    return request.get(PRINCIPAL, ANONYMOUS)


def _owner(request: web.Request) -> str | None:
    """Whose rows the caller may see: its own principal's; None (everyone's) for an admin token,
    and with auth off (one owner: whoever uses this server)."""
    principal = _principal(request)
    return None if principal.admin or principal.owner_id == ANONYMOUS.owner_id else principal.owner_id


def progress(job: dict[str, Any]) -> dict[str, Any]:
    """Per-file and overall progress in audio seconds, with an ETA from the rate so far."""
    files = []
    for f in job["files"]:
        duration = f["duration_s"]
        percent = 100.0 if f["status"] == "done" else (min(99.9, 100 * f["done_s"] / duration) if duration else 0.0)
        keys = ("id", "name", "status", "duration_s", "done_s", "error", "segments", "engine", "model")
        files.append({**{k: f[k] for k in keys}, "percent": round(percent, 1)})
    total = sum(f["duration_s"] or 0 for f in job["files"])
    done = sum(min(f["done_s"], f["duration_s"] or f["done_s"]) for f in job["files"])
    finished = all(f["status"] in FINISHED for f in job["files"])
    complete = finished and job["status"] != "cancelled"  # a cancelled job shows how far it got
    percent = 100.0 if complete else (100 * done / total if total else 0.0)
    eta = None
    if job.get("started") and done > 0 and not finished:
        rate = done / max(1e-6, time.time() - job["started"])
        eta = round((total - done) / rate, 1)
    return {
        "id": job["id"],
        "status": job["status"],
        "created": job["created"],
        "engine": job["engine"],  # asked for; each file says which engine and model produced it
        "options": job["options"],
        "percent": round(min(percent, 100.0), 1),
        "eta_s": eta,
        "audio_s": round(total, 2),
        "done_s": round(done, 2),
        "files": files,
    }


def _render(fmt: str, segments: list[dict], metadata: dict) -> str:
    if fmt == "txt":
        return exports.to_txt(segments)
    if fmt == "srt":
        return exports.to_srt(segments)
    if fmt == "vtt":
        return exports.to_vtt(segments)
    return exports.to_json(segments, metadata)


def _format(request: web.Request, formats: dict[str, str]) -> str:
    fmt = request.match_info["fmt"].lower()
    if fmt not in formats:
        raise _bad(f"format must be one of {', '.join(formats)}", 404)
    return fmt


def _download(body: bytes | str, filename: str, content_type: str) -> web.Response:
    data = body.encode("utf-8") if isinstance(body, str) else body
    disposition = f"attachment; filename*=UTF-8''{_quote(exports.safe_name(filename))}"
    charset = "utf-8" if content_type.startswith(("text/", "application/json", "application/x-subrip")) else None
    return web.Response(body=data, content_type=content_type, charset=charset,
                        headers={"Content-Disposition": disposition})  # fmt: skip


def _quote(name: str) -> str:
    return quote(name, safe="")


def _bad(message: str, status: int = 400, code: str | None = None) -> web.HTTPException:
    kinds = {400: web.HTTPBadRequest, 403: web.HTTPForbidden, 404: web.HTTPNotFound, 409: web.HTTPConflict,
             422: web.HTTPUnprocessableEntity, 503: web.HTTPServiceUnavailable}  # fmt: skip
    code = code or {400: "bad_request", 403: "forbidden", 404: "not_found", 409: "conflict", 422: "unprocessable",
                    503: "unavailable"}[status]  # fmt: skip
    return kinds[status](text=json.dumps({"error": message, "code": code}), content_type="application/json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

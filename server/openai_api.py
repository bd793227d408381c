"""OpenAI-compatible transcription: POST /v1/audio/transcriptions and GET /v1/models, so the
official `openai` client (and tools built on it) work against this server. One request is one
file, streamed through decoding, the same VAD and the executor as everything else: segments are
submitted as they are cut, a few in flight at a time (never the whole file's audio in memory), as
background work with the caller's fair share (its token, or its address with auth off), and
cancelled when the caller disconnects. `model` picks a loaded engine by its name or model (GET
/v1/models lists them); OpenAI's own model names and other unknown names get the live engine, and an
engine this server has not loaded is an error (one rule with /api/jobs: server.jobs_api.requested_engine).
A file whose audio lasts longer than jobs.max_file_audio_s is refused, as in the batch queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from inference.engines.base import DecodeOptions
from inference.scheduler import Source, fair_share_owner
from jobs import exports
from jobs.decoding import decode_in_order
from jobs.media import MediaError, TooLong, probe
from jobs.segmenter import file_settings, read_audio, segments
from server.auth import ANONYMOUS
from server.guard import PRINCIPAL
from server.jobs_api import (
    MALFORMED_MULTIPART,
    UnknownEngine,
    UploadTooLarge,
    form_parts,
    loaded_engines,
    requested_engine,
    save_part,
    upload_name,
)
from server.protocol import ProtocolError, is_language_code, parse_hotwords
from streaming.events import Audio, SegmentClosed, samples_to_ms
from text.hotwords import DEFAULT_WEIGHT

log = logging.getLogger(__name__)

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
IN_FLIGHT_SEGMENTS = 8  # segments cut and not yet decoded per request: bounds memory on long files
CLIENT_CHECK_S = 0.5  # how often a running transcription looks whether its caller is still connected
MAX_PROMPT_CHARS = 500  # a `prompt` that is not a hotword list is one phrase of at most this many characters
MODEL_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")  # OpenAI's; the live engine answers


class OpenAIApi:
    def __init__(self, ctx, config) -> None:
        self.ctx = ctx
        self.config = config
        self.limit = config.jobs.max_upload_mb * 1024 * 1024

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/audio/transcriptions", self.transcribe)
        app.router.add_get("/v1/models", self.models)

    async def models(self, request: web.Request) -> web.Response:
        """OpenAI's names (answered by the live engine), then every loaded engine by name."""
        live = self.ctx.executor.engine
        described = [(alias, f"{live.model} (live engine)") for alias in MODEL_ALIASES]
        described += [(name, engine.model) for name, engine in self.ctx.executor.engines.items()]
        data = [
            {"id": i, "object": "model", "created": 0, "owned_by": "livecaption", "description": description}
            for i, description in described
        ]
        return web.json_response({"object": "list", "data": data})

    async def transcribe(self, request: web.Request) -> web.StreamResponse:
        if request.content_type != "multipart/form-data":
            raise _error("send multipart/form-data with a `file` field", "file")
        fields: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="livecaption-") as tmp:
            try:
                upload = await self._read_form(request, Path(tmp), fields)
            except MALFORMED_MULTIPART as exc:
                raise _error(f"the multipart/form-data body is malformed: {str(exc)[:200]!r}", "file") from None
            if upload is None:
                raise _error("the `file` field is required", "file")
            response_format = fields.get("response_format", "json") or "json"
            if response_format not in FORMATS:
                raise _error(f"response_format must be one of {', '.join(FORMATS)}", "response_format")
            try:
                temperature = float(fields.get("temperature", "0") or 0)
            except ValueError:
                temperature = -1.0
            if not 0 <= temperature <= 1:
                raise _error("temperature must be a number between 0 and 1", "temperature")
            language = (fields.get("language") or "").strip().lower() or None
            if language is not None and not is_language_code(language):
                raise _error("language must be an ISO-639-1 code such as 'en'", "language")
            engine = self._engine(fields.get("model") or "")
            decoder = self.ctx.executor.engines[self.ctx.executor.engine_name(engine)]
            if language is not None and (problem := decoder.language_problem(language)):
                raise _error(problem, "language", code="unsupported_language")
            options = DecodeOptions(language=language, hotwords=_prompt_hotwords(fields.get("prompt") or ""))
            try:
                result = await self._run(request, upload, options, engine)
            except TooLong as exc:
                raise _error(f"the file {exc.reason} (jobs.max_file_audio_s)", "file", code="audio_too_long") from None
            except MediaError as exc:
                raise _error(str(exc), "file") from None
        return _respond(result, response_format, language)

    async def _read_form(self, request: web.Request, folder: Path, fields: dict[str, str]) -> Path | None:
        """The uploaded file, saved in `folder` (None if the form has none); other fields into `fields`."""
        upload: Path | None = None
        async for part in form_parts(await request.multipart()):
            if part.name == "file" and (filename := upload_name(part)) is not None:
                upload = folder / (exports.safe_name(filename) or "audio")
                await self._save(part, upload)
            else:
                fields[part.name or ""] = (await part.read(decode=True)).decode("utf-8", "replace")[:10_000]
        return upload

    def _engine(self, model: str) -> str | None:
        """A loaded engine named by `model`; None (the live engine) for OpenAI's names and others.
        One of this server's engine or model names that is not loaded is an error, not a silent
        substitute (server.jobs_api.requested_engine: the rule /api/jobs follows too)."""
        executor = self.ctx.executor
        try:
            return requested_engine(executor, model, foreign_names=True)
        except UnknownEngine:
            raise _error(f"model {model.strip()[:100]!r} is not loaded on this server; loaded: "
                         f"{loaded_engines(executor)}", "model", code="unknown_engine") from None  # fmt: skip

    async def _save(self, part, target: Path) -> None:
        try:
            await save_part(part, target, self.limit)
        except UploadTooLarge:
            raise _error(f"the file is larger than {self.config.jobs.max_upload_mb} MB", "file", 413) from None

    async def _run(self, request: web.Request, path: Path, options: DecodeOptions, engine: str | None) -> dict:
        """Transcribe while the caller is connected; a caller that leaves takes its work with it."""
        executor = self.ctx.executor
        stream_id = executor.new_stream_id()
        source = Source(_owner(request), live=False)
        work = asyncio.create_task(self._transcribe(path, options, engine, stream_id, source))
        try:
            # aiohttp does not cancel a handler whose client went away (and gives no event for
            # it), so look now and then; a decode already running finishes, nothing else of it does.
            while not work.done():
                await asyncio.wait({work}, timeout=CLIENT_CHECK_S)
                if not work.done() and _client_gone(request):
                    log.info("transcription of %s cancelled: the client disconnected", path.name)
                    raise web.HTTPBadRequest(text="client disconnected")  # nobody reads it
            return work.result()
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            executor.cancel(stream_id)

    async def _transcribe(
        self, path: Path, options: DecodeOptions, engine: str | None, stream_id: int, source: Source
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        info = await loop.run_in_executor(None, probe, str(path))
        limit_s = self.config.jobs.max_file_audio_s
        if info.duration_s is not None and info.duration_s > limit_s:  # what its header says: refused early
            raise TooLong(path, limit_s)
        executor = self.ctx.executor
        pieces: list[dict[str, Any]] = []

        def submit(event: SegmentClosed, audio: Audio, decode: DecodeOptions) -> asyncio.Future:
            return executor.submit_final(stream_id, event.segment_id, audio, decode, engine, source=source)

        audio = read_audio(str(path), max_s=limit_s)  # counted as it decodes: headers lie
        cut = segments(audio, file_settings(self.config, engine=executor.engine_name(engine)), executor)
        decoded = decode_in_order(cut, submit, options, IN_FLIGHT_SEGMENTS)
        try:
            async for event, result in decoded:
                start_ms, end_ms = samples_to_ms(event.speech_start), samples_to_ms(event.speech_end)
                pieces.append({"start_ms": start_ms, "end_ms": end_ms, "text": result.text.strip()})
        finally:
            await decoded.aclose()
        return {"segments": pieces, "duration": info.duration_s}


def _owner(request: web.Request) -> str:
    principal = request.get(PRINCIPAL, ANONYMOUS)
    token_owner = None if principal.owner_id == ANONYMOUS.owner_id else principal.owner_id
    return fair_share_owner(token_owner, request.remote)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _respond(result: dict[str, Any], response_format: str, language: str | None) -> web.Response:
    pieces = [p for p in result["segments"] if p["text"]]
    text = " ".join(p["text"] for p in pieces)
    if response_format == "text":
        return web.Response(text=text + "\n", content_type="text/plain")
    if response_format == "srt":
        return web.Response(text=exports.to_srt(pieces), content_type="text/plain")
    if response_format == "vtt":
        return web.Response(text=exports.to_vtt(pieces), content_type="text/vtt")
    if response_format == "json":
        return web.json_response({"text": text})
    segments = [
        {"id": i, "seek": 0, "start": p["start_ms"] / 1000, "end": p["end_ms"] / 1000, "text": p["text"],
         "tokens": [], "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}
        for i, p in enumerate(pieces)
    ]  # fmt: skip
    return web.json_response(
        {
            "task": "transcribe",
            "language": language or "",
            "duration": result["duration"] or 0.0,
            "text": text,
            "segments": segments,
        }  # fmt: skip
    )


def _prompt_hotwords(prompt: str) -> tuple[tuple[str, int], ...]:
    """The `prompt` as hotwords. A hotword list - JSON, "word weight" lines, or one line of
    "word weight" pairs - keeps its weights (text/hotwords.py reads it as /api/jobs does); any other
    prompt is one phrase, which Whisper reads as its prompt."""
    prompt = prompt.strip()
    if not prompt:
        return ()
    listed = prompt.startswith(("{", "[")) or "\n" in prompt
    if not listed:
        tokens = prompt.replace(",", " ").split()
        listed = len(tokens) % 2 == 0 and all(t.lstrip("+-").isdigit() for t in tokens[1::2])
    if listed:
        try:
            return parse_hotwords(prompt)
        except ProtocolError as exc:
            raise _error(f"prompt: {exc.message}", "prompt") from None
    return ((prompt[:MAX_PROMPT_CHARS], DEFAULT_WEIGHT),)


def _error(message: str, param: str, status: int = 400, code: str | None = None) -> web.HTTPException:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})
    if status == 413:
        return web.HTTPRequestEntityTooLarge(max_size=0, actual_size=0, text=body, content_type="application/json")
    return web.HTTPBadRequest(text=body, content_type="application/json")

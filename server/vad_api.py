"""VAD view: POST /api/vad with one multipart file answers its speech intervals, found by the same
endpointing chain as live streams and file jobs (jobs.segmenter.segments: energy gate, webrtcvad,
FSMN through the executor's VAD lane; the server's [endpointing] settings), as JSON, or CSV with
?format=csv. Nothing is transcribed or stored: the upload lives in a temporary folder for the
request. The same rules as uploads: a token (private route), jobs.max_upload_mb, and
jobs.max_file_audio_s counted as it decodes. GET /vad is the page (client_js/vad.html)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from jobs import exports
from jobs.media import MediaError, TooLong, probe
from jobs.segmenter import file_settings, read_audio, segments
from server.jobs_api import MALFORMED_MULTIPART, UploadTooLarge, form_parts, save_part, upload_name
from server.pages import file_response
from streaming.events import SAMPLE_RATE

PAGE = Path(__file__).resolve().parent.parent / "client_js" / "vad.html"
FORMATS = ("json", "csv")


class VadApi:
    def __init__(self, executor, config) -> None:
        self.executor = executor
        self.config = config
        self.limit = config.jobs.max_upload_mb * 1024 * 1024

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/vad", self.intervals)
        app.router.add_get("/vad", self.page)

    async def page(self, request: web.Request) -> web.StreamResponse:
        if not PAGE.is_file():
            raise web.HTTPNotFound(text="page not installed (client_js/vad.html)")
        return file_response(PAGE)

    async def intervals(self, request: web.Request) -> web.Response:
        fmt = request.query.get("format", "json").lower()
        if fmt not in FORMATS:
            raise _bad(f"format must be one of {', '.join(FORMATS)}")
        if request.content_type != "multipart/form-data":
            raise _bad("send multipart/form-data with one file")
        with tempfile.TemporaryDirectory(prefix="livecaption-vad-") as tmp:
            try:
                name, path = await self._upload(request, Path(tmp))
            except MALFORMED_MULTIPART as exc:
                raise _bad(f"the multipart/form-data body is malformed: {str(exc)[:200]!r}") from None
            try:
                found = await self._detect(path)
            except TooLong as exc:
                raise _bad(f"{name}: {exc.reason} (jobs.max_file_audio_s)", code="audio_too_long") from None
            except MediaError as exc:
                raise _bad(f"{name}: {exc.reason}", code="bad_media") from None
        body = {"file": name, **found}
        if fmt == "csv":
            return web.Response(text=to_csv(body["intervals"]), content_type="text/csv", charset="utf-8")
        return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False))

    async def _upload(self, request: web.Request, folder: Path) -> tuple[str, Path]:
        found: tuple[str, Path] | None = None
        async for part in form_parts(await request.multipart()):
            name = upload_name(part)
            if name is None or found is not None:  # other fields, and a second file, are read past
                await part.release()
                continue
            target = folder / (exports.safe_name(name) or "audio")
            try:
                await save_part(part, target, self.limit)
            except UploadTooLarge:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=self.limit,
                    actual_size=self.limit + 1,
                    text=json.dumps({"error": f"{name!r} is larger than max_upload_mb "
                                     f"({self.config.jobs.max_upload_mb} MB)", "code": "too_large"}),
                    content_type="application/json",
                ) from None  # fmt: skip
            found = (name, target)
        if found is None:
            raise _bad("no file in the request")
        return found

    async def _detect(self, path: Path) -> dict[str, Any]:
        limit_s = self.config.jobs.max_file_audio_s
        info = await asyncio.get_running_loop().run_in_executor(None, probe, str(path))
        if info.duration_s is not None and info.duration_s > limit_s:  # what its header says: refused early
            raise TooLong(path, limit_s)
        settings = file_settings(self.config)
        decoded = 0  # samples: the duration as decoded (a header may lie or say nothing)

        async def counted():
            nonlocal decoded
            async for chunk in read_audio(str(path), max_s=limit_s):
                decoded += len(chunk)
                yield chunk

        intervals = []
        async for event in segments(counted(), settings, self.executor):
            start_s, end_s = event.start_ms / 1000, event.end_ms / 1000  # whole ms, as job segments are stored
            intervals.append({"start": round(start_s, 3), "end": round(end_s, 3),
                              "duration": round(end_s - start_s, 3), "reason": event.reason})  # fmt: skip
        ep = settings.endpoint
        return {
            "duration": round(decoded / SAMPLE_RATE, 3),
            "speech": round(sum(i["duration"] for i in intervals), 3),
            "intervals": intervals,
            "settings": {
                "silence_ms": ep.silence_ms,
                "max_segment_s": ep.max_segment_s,
                "speech_onset_ms": ep.speech_onset_ms,
                "energy_gate_dbfs": settings.energy_gate_dbfs,
                "webrtc_aggressiveness": settings.webrtc_aggressiveness,
                "fsmn_speech_threshold": settings.fsmn_speech_threshold,
            },
        }


def to_csv(intervals: list[dict[str, Any]]) -> str:
    """One row per interval: index, start, end, duration (seconds, three decimals), why it ended."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["index", "start_s", "end_s", "duration_s", "reason"])
    for i, interval in enumerate(intervals, 1):
        row = (interval["start"], interval["end"], interval["duration"])
        writer.writerow([i, *(f"{v:.3f}" for v in row), interval["reason"]])
    return out.getvalue()


def _bad(message: str, code: str = "bad_request") -> web.HTTPException:
    return web.HTTPBadRequest(text=json.dumps({"error": message, "code": code}), content_type="application/json")

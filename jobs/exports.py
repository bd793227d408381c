"""Transcript exports: TXT, SRT, WebVTT and JSON per file; CSV, JSON and a ZIP of everything per job.

Pure functions from segments to text (or bytes for the ZIP). A segment is a `Segment` or any mapping
with `start_ms`, `end_ms` and `text` (rows from jobs.store carry extra keys such as `seq`; they are
ignored). Every writer cleans segments the same way first: text on one line (line breaks, tabs and
control characters become single spaces), segments whose text is then empty are left out, times are
whole milliseconds, never negative, and an end before its start is moved up to the start.

Decisions:
- CSV is written for spreadsheet users: a UTF-8 byte order mark (so Excel on Windows does not read CJK
  as mojibake; Python reads it back with encoding="utf-8-sig"), CRLF rows, times as "HH:MM:SS.mmm"
  (a decimal like 12.345 means 12345 in locales with a decimal comma), and cells that Excel would run
  as formulas (starting with = + - @ tab or CR) prefixed with an apostrophe. JSON is the lossless,
  machine-readable export.
- File names in a ZIP and in downloads go through `safe_name`, so no name can leave the archive's root
  or the download folder, whatever a client uploaded.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FILE_FORMATS = ("txt", "srt", "vtt", "json")  # per-file exports, also the entries zip_job writes per file
MAX_NAME_BYTES = 200  # of a sanitised name in UTF-8; common file systems allow 255, leaving room for suffixes


@dataclass(frozen=True)
class Segment:
    start_ms: int
    end_ms: int
    text: str


SegmentLike = Segment | Mapping[str, Any]


# --- per file -------------------------------------------------------------------------------------
def to_txt(segments: Iterable[SegmentLike]) -> str:
    """The transcript, one segment per line."""
    return "".join(f"{s.text}\n" for s in clean(segments))


def to_srt(segments: Iterable[SegmentLike]) -> str:
    """SubRip: numbered cues from 1, "HH:MM:SS,mmm" times (hours keep counting past 99)."""
    return "".join(
        f"{i}\n{_clock(s.start_ms, ',')} --> {_clock(s.end_ms, ',')}\n{s.text}\n\n"
        for i, s in enumerate(clean(segments), 1)
    )


def to_vtt(segments: Iterable[SegmentLike]) -> str:
    """WebVTT: numbered cues, "HH:MM:SS.mmm" times, text with & < > escaped (so "-->" cannot end up in it)."""
    cues = "".join(
        f"{i}\n{_clock(s.start_ms, '.')} --> {_clock(s.end_ms, '.')}\n{_vtt_escape(s.text)}\n\n"
        for i, s in enumerate(clean(segments), 1)
    )
    return "WEBVTT\n\n" + cues


def to_json(segments: Iterable[SegmentLike], metadata: Mapping[str, Any] | None = None) -> str:
    """{"metadata": {...}, "text": full transcript, "segments": [{"start": s, "end": s, "text": ...}]}."""
    return _dump({"metadata": dict(metadata or {}), **_transcript(clean(segments))})


# --- per job ----------------------------------------------------------------------------------------
def to_csv(files: Mapping[str, Iterable[SegmentLike]] | Iterable[Mapping[str, Any]], bom: bool = True) -> str:
    """One row per segment: file, start, end, text (see the module's notes on Excel).

    `files` maps each file's name to its segments, or is an iterable of rows that carry a `file` key
    next to the segment keys.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # the csv module quotes separators, quotes and newlines
    writer.writerow(["file", "start", "end", "text"])
    for name, segments in _by_file(files):
        for s in clean(segments):
            writer.writerow([_cell(name), _clock(s.start_ms, "."), _clock(s.end_ms, "."), _cell(s.text)])
    return ("\ufeff" if bom else "") + out.getvalue()


def job_json(files: Mapping[str, Iterable[SegmentLike]], metadata: Mapping[str, Any] | None = None) -> str:
    """{"metadata": {...}, "files": [{"file": name, "text": ..., "segments": [...]}, ...]}."""
    entries = [{"file": name, **_transcript(clean(segments))} for name, segments in _by_file(files)]
    return _dump({"metadata": dict(metadata or {}), "files": entries})


def zip_job(
    files: Mapping[str, Iterable[SegmentLike]],
    formats: Iterable[str] = FILE_FORMATS,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """A ZIP with `<name>.<fmt>` for each file and format, plus job.csv and job.json, all at its root.

    Names are `safe_name`s of the file names without their extension ("talk.mp3" -> "talk.srt", as
    players look for subtitles next to the video); clashes, ignoring case, get " (2)", " (3)", ...
    """
    formats = list(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in formats if f not in FILE_FORMATS]
    if unknown:
        raise ValueError(f"formats must be among {', '.join(FILE_FORMATS)}; got {', '.join(unknown)}")
    files = {name: clean(segments) for name, segments in files.items()}
    used: set[str] = set()
    buffer = io.BytesIO()
    when = time.localtime()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, text: str) -> None:
            info = zipfile.ZipInfo(_unique(name, used), date_time=when)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16  # a plain readable file when unpacked on Unix
            archive.writestr(info, text.encode("utf-8"))

        add("job.csv", to_csv(files))
        add("job.json", job_json(files, metadata))
        for name, segments in files.items():
            stem = _stem(safe_name(name)) or "file"
            for fmt in formats:
                text = to_json(segments, {"file": name}) if fmt == "json" else _WRITERS[fmt](segments)
                add(f"{stem}.{fmt}", text)
    return buffer.getvalue()


# --- names ------------------------------------------------------------------------------------------
_FORBIDDEN = re.compile(r'[<>:"|?*]')  # not allowed in Windows file names
_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com\d|lpt\d)(\..*)?")  # Windows device names
_DROPPED = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # controls, bidi overrides, surrogates, ...


def safe_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A file name that is safe to write anywhere: the last path component of `name` ("/" and "\\" both
    separate, so "../../etc/passwd" -> "passwd", "C:\\Users\\me\\talk.mp3" -> "talk.mp3"), NFC-normalised,
    without control/format characters, with Windows-forbidden characters as "_", no leading or trailing
    dots or spaces (so never "." or ".."), not a Windows device name, and at most `max_bytes` in UTF-8
    (cut at a character boundary, keeping a short extension). Letters of every script are kept.

    Returns "" when nothing usable is left: callers supply their own default.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(
        " " if unicodedata.category(c) == "Zs" else c for c in text if unicodedata.category(c) not in _DROPPED
    )
    parts = [p for p in re.split(r"[/\\]", text) if p.strip(" .")]
    text = _FORBIDDEN.sub("_", parts[-1] if parts else "")
    text = re.sub(r" {2,}", " ", text).strip(" .")
    if _RESERVED.fullmatch(text):
        text = "_" + text
    return _fit(text, max_bytes)


def unique_names(names: Iterable[str]) -> list[str]:
    """The names in order, each clash (ignoring case) renamed "a.wav" -> "a (2).wav", "a (3).wav", ...:
    a job's exports key files by name, and two uploads may share one."""
    names = [str(n) for n in names]
    taken = {n.casefold() for n in names}  # a later upload really named "a (2).wav" keeps its name
    out, seen = [], set()
    for name in names:
        if name.casefold() in seen:
            name = _unique(name, taken)
        seen.add(name.casefold())
        out.append(name)
    return out


def _fit(name: str, max_bytes: int) -> str:
    if len(name.encode("utf-8")) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode("utf-8")) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = max_bytes - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(" .")
    return cut + suffix


def _stem(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and 0 < len(ext) <= 5 and ext.isalnum() else name


def _unique(name: str, used: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    stem, suffix = (stem, dot + ext) if dot else (name, "")
    candidate, n = name, 1
    while candidate.casefold() in used:
        n += 1
        candidate = f"{stem} ({n}){suffix}"
    used.add(candidate.casefold())
    return candidate


# --- segments ---------------------------------------------------------------------------------------
def clean(segments: Iterable[SegmentLike]) -> list[Segment]:
    """Segments as every writer sees them (see the module docstring); ValueError names a malformed one."""
    out = []
    for i, item in enumerate(segments):
        try:
            if isinstance(item, Mapping):
                start, end, text = item["start_ms"], item["end_ms"], item["text"]
            else:
                start, end, text = item.start_ms, item.end_ms, item.text
            start = max(0, round(start))
            end = max(start, round(end))
        except (KeyError, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"segment {i} needs numeric start_ms and end_ms and a text: {exc!r}") from None
        text = _one_line(str(text or ""))
        if text:
            out.append(Segment(start, end, text))
    return out


def _one_line(text: str) -> str:
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return " ".join(text.split())


def _transcript(segments: list[Segment]) -> dict[str, Any]:
    return {
        "text": " ".join(s.text for s in segments),
        "segments": [{"start": s.start_ms / 1000, "end": s.end_ms / 1000, "text": s.text} for s in segments],
    }


def _by_file(files) -> Iterable[tuple[str, Iterable[SegmentLike]]]:
    if isinstance(files, Mapping):
        return [(str(name), segments) for name, segments in files.items()]
    grouped: dict[str, list] = {}
    for row in files:
        grouped.setdefault(str(row["file"]), []).append(row)
    return list(grouped.items())


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


_WRITERS = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt}

"""Wire messages: parse and validate client JSON, build server replies. Pure functions.

A superset of FunASR's runtime WebSocket protocol; docs/protocol.md mirrors this module.
Every reply a FunASR client may see has FunASR's shape - `mode`, `text`, `wav_name`, `is_final` -
because FunASR's clients read those keys from every message (funasr-client 0.1.6 dies on a reply
without `mode`). Messages FunASR does not have (`ready`, `warning`) go only to clients that ask for
them with `"extra_replies": true` in their first message (our own clients do).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streaming.stabilizer import is_cjk
from text.hotwords import DEFAULT_WEIGHT as DEFAULT_HOTWORD_WEIGHT
from text.hotwords import MAX_WEIGHT as MAX_HOTWORD_WEIGHT
from text.hotwords import MIN_WEIGHT as MIN_HOTWORD_WEIGHT
from text.hotwords import HotwordError, parse_hotwords_value

if TYPE_CHECKING:
    from streaming.captions import FinalCaption, PartialCaption

MODES = ("offline", "online", "2pass")
# FunASR resamples whatever rate a client announces; so do we (soxr), within these bounds.
MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 192_000
# FunASR's SeACo-Paraformer takes hotword weights 1..100; FunASR's clients send any integer.
MAX_WAV_FORMAT = 16
MAX_WAV_NAME = 256
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a session id clients may choose
DEFAULT_CHUNK_INTERVAL = 10  # FunASR's clients' default (chunk_size[1] / chunk_interval ms per frame)
MAX_HOTWORDS = 200
MAX_HOTWORD_CHARS = 64


class ProtocolError(ValueError):
    """A client message is invalid. `code` is stable for programs, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StartStream:
    mode: str
    wav_name: str
    audio_fs: int
    chunk_size: tuple[int, int, int]
    chunk_interval: int
    hotwords: tuple[tuple[str, int], ...]
    itn: bool
    is_speaking: bool
    # Our extensions; None = use the server's config.
    language: str | None = None
    silence_ms: int | None = None
    max_segment_s: float | None = None
    partial_interval_ms: int | None = None
    session_id: str | None = None  # captions session to join or resume; None = a new one
    resume_after: int | None = None  # resume: replay the session's finals with a higher segment_id (-1 = all)
    # "pcm" (PCM16LE frames), or a container/codec name (mp3, wav, m4a, "others", ...): then the
    # frames are a file's bytes, decoded when the stream ends (FunASR's offline file upload).
    wav_format: str = "pcm"
    extra_replies: bool = False  # the client understands messages FunASR does not have (ready, warning)
    warnings: tuple[str, ...] = ()  # what was accepted only after a correction (clamped hotword weights)

    @property
    def is_container(self) -> bool:
        return self.wav_format != "pcm"


@dataclass(frozen=True)
class EndStream:
    """`{"is_speaking": false}`: finalize every open segment, then reply with is_final: true."""


@dataclass(frozen=True)
class KeepGoing:
    """A control message that changes nothing (e.g. a repeated `{"is_speaking": true}`)."""


@dataclass(frozen=True)
class Limits:
    max_segment_s: float


def parse_text(text: str, limits: Limits, stream_open: bool) -> StartStream | EndStream | KeepGoing:
    """Parse one text frame. The first message of a stream must configure it.

    `is_speaking: false` ends an open stream whatever else the message holds: FunASR's HTML5 and
    web clients repeat their whole configuration (mode, wav_name, chunk_size, ...) in the end
    message, and FunASR's servers end the stream on is_speaking alone."""
    try:
        message = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"text message is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", "text message must be a JSON object")
    is_speaking = _optional_bool(message, "is_speaking", True)
    if stream_open:
        if not is_speaking:
            return EndStream()
        if "mode" in message or "audio_fs" in message or "wav_format" in message:
            raise ProtocolError(
                "already_started",
                'the stream is already configured; send {"is_speaking": false} to end it first',
            )
        return KeepGoing()
    if not is_speaking and "mode" not in message:
        return EndStream()  # ending a stream that never started: reply end at once
    return _parse_start(message, limits, is_speaking)


def _parse_start(message: dict[str, Any], limits: Limits, is_speaking: bool) -> StartStream:
    mode = message.get("mode", "2pass")
    if mode not in MODES:
        raise ProtocolError("bad_mode", f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    wav_format = _wav_format(message.get("wav_format", "pcm"))
    audio_fs = message.get("audio_fs", 16000)
    if isinstance(audio_fs, float) and audio_fs.is_integer():
        audio_fs = int(audio_fs)
    if not _is_int(audio_fs) or not MIN_SAMPLE_RATE_HZ <= audio_fs <= MAX_SAMPLE_RATE_HZ:
        raise ProtocolError(
            "bad_sample_rate",
            f"audio_fs must be an integer {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} (Hz); got {audio_fs!r}",
        )
    wav_name = message.get("wav_name", "stream")
    if not isinstance(wav_name, str) or len(wav_name) > MAX_WAV_NAME:
        raise ProtocolError("bad_setting", f"wav_name must be a string of at most {MAX_WAV_NAME} characters")
    language = message.get("language")
    if language is not None and not is_language_code(language):
        raise ProtocolError("bad_setting", f"language must be a language code such as 'en'; got {language!r}")
    hotwords, warnings = parse_hotwords_leniently(message.get("hotwords", ""))
    return StartStream(
        mode=mode,
        wav_name=wav_name,
        audio_fs=audio_fs,
        chunk_size=_chunk_size(message.get("chunk_size", [5, 10, 5])),
        chunk_interval=_int_in(message, "chunk_interval", None, 1, 1000) or DEFAULT_CHUNK_INTERVAL,  # null: unset
        hotwords=hotwords,
        itn=_optional_bool(message, "itn", True),
        is_speaking=is_speaking,
        language=language.lower() if language else None,
        silence_ms=_int_in(message, "silence_ms", None, 50, 5000),
        max_segment_s=_number_in(message, "max_segment_s", None, 1.0, limits.max_segment_s),
        partial_interval_ms=_partial_interval(message),
        session_id=_session_id(message.get("session_id")),
        resume_after=_int_in(message, "resume_after", None, -1, 2**31),
        wav_format=wav_format,
        extra_replies=_optional_bool(message, "extra_replies", False),
        warnings=warnings,
    )


def _wav_format(value: Any) -> str:
    """ "pcm" for raw PCM16 frames (any case: FunASR's HTML5 client sends "PCM"), else the name of
    the file format whose bytes follow ("mp3", "wav", "others", ...): decoding finds out what it is."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_WAV_FORMAT or not value.replace("_", "").isalnum():
        raise ProtocolError(
            "bad_format",
            f"wav_format must be 'pcm' or a file format name such as 'mp3' (letters and digits, "
            f"at most {MAX_WAV_FORMAT}); got {str(value)[:40]!r}",
        )
    return value.lower()


def _session_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not SESSION_ID.match(value):
        raise ProtocolError(
            "bad_setting", f"session_id must be 1..64 characters of A-Z a-z 0-9 _ -; got {str(value)[:80]!r}"
        )
    return value


def is_language_code(value: Any) -> bool:
    """A language code such as "en" or "yue" (letters only, 2..8)."""
    return isinstance(value, str) and value.isalpha() and 2 <= len(value) <= 8


def parse_hotwords(value: Any) -> tuple[tuple[str, int], ...]:
    """FunASR sends hotwords as a JSON string '{"word": weight}'; JSON lists, plain 'a b' or 'a,b' lists
    and "word weight" lines (FunASR's hotword-file format) also work (text/hotwords.py).
    Weights outside 1..100 are an error here; `parse_hotwords_leniently` clamps them instead."""
    hotwords, clamped = parse_hotwords_leniently(value)
    if clamped:
        raise ProtocolError("bad_hotwords", clamped[0])
    return hotwords


def parse_hotwords_leniently(value: Any) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Hotwords as FunASR's clients send them, with out-of-range weights clamped to 1..100 (FunASR's
    clients send any integer, and a stream should not fail over one weight); returns the hotwords
    and a warning per clamped weight. Anything else unusable is a ProtocolError."""
    if value is None or value == "":
        return (), ()
    try:  # JSON object or list, "word weight" lines, or a plain word list: text/hotwords.py reads them all
        value = parse_hotwords_value(value)
    except HotwordError as exc:
        raise ProtocolError("bad_hotwords", str(exc)) from None
    if len(value) > MAX_HOTWORDS:
        raise ProtocolError("bad_hotwords", f"at most {MAX_HOTWORDS} hotwords; got {len(value)}")
    out, warnings = [], []
    for word, weight in value.items():
        if weight is None:
            weight = DEFAULT_HOTWORD_WEIGHT  # FunASR's default weight for unweighted hotwords
        if not isinstance(word, str) or not word.strip() or len(word) > MAX_HOTWORD_CHARS:
            raise ProtocolError("bad_hotwords", f"hotword {word!r} must be 1..{MAX_HOTWORD_CHARS} characters")
        if isinstance(weight, float) and math.isfinite(weight) and weight.is_integer():
            weight = int(weight)
        if not _is_int(weight):
            raise ProtocolError(
                "bad_hotwords",
                f"hotword weight for {word!r} must be an integer "
                f"{MIN_HOTWORD_WEIGHT}..{MAX_HOTWORD_WEIGHT}; got {weight!r}",
            )
        clamped = min(MAX_HOTWORD_WEIGHT, max(MIN_HOTWORD_WEIGHT, weight))
        if clamped != weight:
            warnings.append(
                f"hotword weight for {word!r} must be {MIN_HOTWORD_WEIGHT}..{MAX_HOTWORD_WEIGHT}; "
                f"got {weight}, used {clamped}"
            )
        out.append((word.strip(), clamped))
    return tuple(out), tuple(warnings)


def _chunk_size(value: Any) -> tuple[int, int, int]:
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",")]
        except ValueError:
            value = None
    if not isinstance(value, list) or len(value) != 3 or not all(_is_int(v) and 0 <= v <= 100 for v in value):
        raise ProtocolError("bad_setting", f"chunk_size must be three integers 0..100 like [5, 10, 5]; got {value!r}")
    return (value[0], value[1], value[2])


def _partial_interval(message: dict[str, Any]) -> int | None:
    value = message.get("partial_interval_ms")
    if value == 0:
        return 0  # partials off
    return _int_in(message, "partial_interval_ms", None, 100, 10_000)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_bool(message: dict[str, Any], key: str, default: bool) -> bool:
    value = message.get(key, default)
    if isinstance(value, bool):
        return value
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ProtocolError("bad_setting", f"{key} must be true or false; got {value!r}")


def _int_in(message: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = message.get(key, default)
    if value is None:
        return None
    if not _is_int(value) or not low <= value <= high:
        raise ProtocolError("bad_setting", f"{key} must be an integer {low}..{high}; got {value!r}")
    return value


def _number_in(message: dict[str, Any], key: str, default: float | None, low: float, high: float) -> float | None:
    value = message.get(key, default)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ProtocolError("bad_setting", f"{key} must be a number {low:g}..{high:g}; got {value!r}")
    return float(value)


# --- replies ---------------------------------------------------------------------------------


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def ready(start: StartStream, engine: str, model: str, session_id: str = "", resumed: bool = False) -> dict[str, Any]:
    return {
        "type": "ready",
        "text": "",
        "is_final": False,
        "wav_name": start.wav_name,
        "session_id": session_id,
        "resumed": resumed,
        "engine": engine,
        "model": model,
        "sample_rate": 16000,
    }


def subscribed(session_id: str) -> dict[str, Any]:
    """First reply on /subscribe; the session's captions follow."""
    return {"type": "subscribed", "session_id": session_id, "text": "", "is_final": False}


def partial_mode(mode: str) -> str:
    """FunASR's `mode` for replies about the open segment."""
    return "2pass-online" if mode == "2pass" else mode


def final_mode(mode: str) -> str:
    """FunASR's `mode` for a segment's final text and for the end of a stream."""
    return "2pass-offline" if mode == "2pass" else mode


def error(code: str, message: str, wav_name: str | None = None, mode: str = "2pass") -> dict[str, Any]:
    """A problem that does not end the stream (the offending message or frame was dropped).

    FunASR-shaped with empty text, so FunASR's clients print nothing and go on."""
    return {
        "type": "error",
        "mode": partial_mode(mode),
        "code": code,
        "message": message,
        "error": message,
        "text": "",
        "wav_name": "" if wav_name is None else wav_name,
        "is_final": False,
    }


def refusal(code: str, message: str) -> dict[str, Any]:
    """The connection is refused before any stream (busy, wrong token, ...); the socket closes next.
    is_final and is_end, so clients that wait for either (funasr-client, FunASR's Python client) end."""
    return {**error(code, message), "is_final": True, "is_end": True}


def warning(message: str, wav_name: str, mode: str) -> dict[str, Any]:
    """Something was accepted only after a correction (e.g. a clamped hotword weight)."""
    return {"type": "warning", "mode": partial_mode(mode), "message": message, "text": "", "wav_name": wav_name,
            "is_final": False}  # fmt: skip


def for_funasr_client(reply: dict[str, Any]) -> dict[str, Any]:
    """A reply as a client that did not ask for `extra_replies` gets it (FunASR's own and PyPI clients).

    - `error` is an object {code, message}: funasr-python parses a reply holding `error` as an error
      object (a string makes it drop the reply), and a final must not look like one, so finals leave
      the key out (the `decode_failed` error reply before them says what went wrong).
    - a stream that ends in failure says so in `text`, as FunASR's C++ server does ("ERROR. ..."):
      FunASR's clients print `text` and nothing else."""
    kind = reply.get("type")
    if "error" not in reply:
        return reply
    reply = dict(reply)
    message = reply.pop("error")
    if kind == "error":
        reply["error"] = {"code": reply["code"], "message": message}
        if reply["is_final"]:  # a refusal: the only thing such a client will ever show
            reply["text"] = f"ERROR: {message}"
    elif kind == "end":
        reply["text"] = f"{reply['text']} ERROR: {message}".strip()
    return reply


def appendable(text: str) -> str:
    """FunASR's clients concatenate `text` of successive replies; end space-separated text with a
    space so words of consecutive replies do not run together (CJK text needs none)."""
    if not text or text[-1].isspace() or is_cjk(text[-1]):
        return text
    return text + " "


def partial(
    mode: str, wav_name: str, segment_id: int, start_ms: int, end_ms: int, delta: str, stable: str, unstable: str
) -> dict[str, Any]:
    return {
        "mode": partial_mode(mode),
        "type": "partial",
        "text": appendable(delta),
        "wav_name": wav_name,
        "is_final": False,
        "segment_id": segment_id,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "stable": stable,
        "unstable": unstable,
    }


def final(
    mode: str,
    wav_name: str,
    segment_id: int,
    start_ms: int,
    end_ms: int,
    text: str,
    append_text: str,
    end_reason: str,
    timestamps: tuple[tuple[int, int], ...] | None,
) -> dict[str, Any]:
    """A segment's final caption. For `online` (append-only) clients `text` is what to append."""
    reply = {
        "mode": final_mode(mode),
        "type": "final",
        "text": appendable(append_text if mode == "online" else text),
        "final_text": text,
        "wav_name": wav_name,
        "is_final": False,
        "segment_id": segment_id,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "end_reason": end_reason,
    }
    if timestamps:
        reply["timestamp"] = json.dumps([list(t) for t in timestamps])
    return reply


def end(mode: str, wav_name: str, segments: list[dict[str, Any]], failure: str | None = None) -> dict[str, Any]:
    """The last reply of a stream. Offline mode gets its whole transcript here, as FunASR's does.
    `failure`: why the stream could not be transcribed (it never started, its file would not decode)."""
    reply = {
        "mode": final_mode(mode),
        "type": "end",
        "text": "",
        "wav_name": wav_name,
        "is_final": True,
        "is_end": True,
        "segments": [
            {k: s[k] for k in ("segment_id", "start_ms", "end_ms", "final_text", "end_reason")} for s in segments
        ],
    }
    if mode == "offline":
        reply["text"] = " ".join(s["final_text"] for s in segments if s["final_text"])
        stamps = [json.loads(s["timestamp"]) for s in segments if "timestamp" in s]
        if stamps:
            reply["timestamp"] = json.dumps([t for group in stamps for t in group])
    if failure is not None:
        reply["error"] = failure
    return reply


def last_final(final_reply: dict[str, Any], end_reply: dict[str, Any]) -> dict[str, Any]:
    """For FunASR clients, the final of the segment the end of the stream closed is the stream's
    last reply, as FunASR's servers send it: is_final true with that segment's text. Clients that stop
    at the first is_final (funasr-client) or keep only that reply (funasr-python) see the text, and
    clients that wait for `is_end` (FunASR's Python client) get their acknowledgement."""
    return {**end_reply, **final_reply, "is_final": True, "is_end": True, "segments": end_reply["segments"]}


def partial_caption(start: StartStream, caption: PartialCaption) -> dict[str, Any]:
    """A partial caption as the stream's reply (its mode and wav_name)."""
    c = caption
    return partial(start.mode, start.wav_name, c.segment_id, c.start_ms, c.end_ms, c.delta, c.stable, c.unstable)


def final_caption(start: StartStream, caption: FinalCaption) -> dict[str, Any]:
    """A final caption as the stream's reply, with where its time went (FinalCaption.timing)."""
    c = caption
    reply = final(
        start.mode,
        start.wav_name,
        c.segment_id,
        c.start_ms,
        c.end_ms,
        c.text,
        c.append_text,
        c.end_reason,
        c.timestamps,
    )
    reply.update(c.timing())  # where the time went after the segment closed, and what the guards did
    return reply

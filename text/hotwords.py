"""Hotword lists: one parser for the server's hotword file and for the lists clients send (FunASR's
JSON object, JSON lists, plain word lists and "word weight" lines), and merging the server's list
with a stream's own.

Text forms (`parse_hotwords_value`):
- a JSON object '{"word": weight}' (FunASR's clients) or a JSON list '["word", ["word", weight]]';
- lines, as in FunASR's hotword file: one "phrase" or "phrase weight" per line (a phrase may hold
  spaces: "machine learning 50"), `#` comments (a `#` at a line's start or after a space);
- one line: words separated by spaces or commas ("alpha, beta gamma"); a whole number right after
  a word is that word's weight ("阿里巴巴 30 达摩院"), never a hotword of its own.
Weights are returned as given (None: none given); callers check or clamp them.

Files (`load_hotword_file`) are always read as lines, in UTF-8 (with or without the byte order mark
Windows Notepad writes) or GB18030 (which includes GBK and GB2312), detected in that order."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_WEIGHT = 20  # FunASR's weight for a hotword given without one
MIN_WEIGHT = 1
MAX_WEIGHT = 100
ENCODINGS = ("utf-8-sig", "gb18030")  # tried in this order; utf-8-sig also reads UTF-8 without a BOM
ACCEPTED_ENCODINGS = "UTF-8 (with or without BOM) or GB18030/GBK"
_COMMENT = re.compile(r"(^|\s)#.*$")
_WEIGHT = re.compile(r"[+-]?\d+")
_WEIGHTED_LINE = re.compile(r"(.*\S)\s+([+-]?\d+)")


class HotwordError(ValueError):
    """A hotword list cannot be read; the message says why (and where, for files)."""


class HotwordFileError(HotwordError):
    """The hotword file cannot be used; the message names the file and line."""


def decode_hotword_bytes(data: bytes, source: str = "hotword file") -> str:
    """Text of a hotword file in any accepted encoding (ENCODINGS, tried in order); HotwordError
    naming the accepted encodings otherwise."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data:
        raise HotwordError(f"{source} looks like UTF-16; save it as {ACCEPTED_ENCODINGS}")
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise HotwordError(f"{source} is neither valid UTF-8 nor GB18030; save it as {ACCEPTED_ENCODINGS}")


def parse_hotword_lines(text: str) -> list[tuple[str, int | None, int]]:
    """FunASR's hotword-file format: (phrase, weight or None, line number) per non-empty line."""
    out: list[tuple[str, int | None, int]] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        weighted = _WEIGHTED_LINE.fullmatch(line)
        if weighted:
            out.append((" ".join(weighted[1].split()), int(weighted[2]), number))
        else:
            out.append((" ".join(line.split()), None, number))
    return out


def parse_hotwords_value(value: Any) -> dict[str, Any]:
    """A hotword list in any accepted form (see the module docstring; also a dict or a list as
    decoded JSON) -> {phrase: weight as given, None where none was}. Later repeats win.
    HotwordError for JSON that does not parse or a value of another shape."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.lstrip("\ufeff").strip()
        if text.startswith(("{", "[")):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise HotwordError(f"hotwords is not valid JSON: {exc}") from None
        elif "\n" in text or "\r" in text:
            return {phrase: weight for phrase, weight, _ in parse_hotword_lines(text)}
        else:
            return _one_line(text)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for item in value:
            if isinstance(item, str):
                out.update(parse_hotwords_value(item) if "\n" in item else {" ".join(item.split()): None})
            elif isinstance(item, list) and len(item) == 2 and isinstance(item[0], str):
                out[" ".join(item[0].split())] = item[1]
            else:
                raise HotwordError(f'a hotword list holds words or ["word", weight] pairs; got {str(item)[:40]!r}')
        return out
    raise HotwordError('hotwords must be a JSON object {"word": weight}, a word list, or "word weight" lines')


def _one_line(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    last: str | None = None
    for token in text.replace(",", " ").replace("，", " ").split():
        if last is not None and _WEIGHT.fullmatch(token):
            out[last] = int(token)
            last = None
            continue
        out.pop(token, None)
        out[token] = None
        last = token
    return out


def load_hotword_file(path: str | Path) -> tuple[tuple[str, int], ...]:
    """Read FunASR's hotword file format: one "phrase" or "phrase weight" per line, # comments;
    UTF-8 (BOM or not) or GB18030/GBK."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HotwordFileError(f"hotword file {path} cannot be read: {exc}") from None
    try:
        text = decode_hotword_bytes(data, f"hotword file {path}")
    except HotwordError as exc:
        raise HotwordFileError(f"{exc} (it cannot be read as it is)") from None
    words: dict[str, int] = {}
    for phrase, weight, number in parse_hotword_lines(text):
        weight = DEFAULT_WEIGHT if weight is None else weight
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            raise HotwordFileError(f"{path}:{number}: weight must be {MIN_WEIGHT}..{MAX_WEIGHT}, got {weight}")
        words[phrase] = weight
    return tuple(words.items())


def merge_hotwords(
    server: tuple[tuple[str, int], ...], stream: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, int], ...]:
    """Server hotwords first, then the stream's; a phrase in both takes the stream's weight."""
    merged = dict(server)
    for phrase, weight in stream:
        merged.pop(phrase, None)
        merged[phrase] = weight
    return tuple(merged.items())

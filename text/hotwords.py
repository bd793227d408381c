"""Hotword lists: the server's hotword file and merging it with a stream's own hotwords."""

from __future__ import annotations

from pathlib import Path

DEFAULT_WEIGHT = 20  # FunASR's weight for a hotword given without one
MAX_WEIGHT = 100


class HotwordFileError(ValueError):
    """The hotword file cannot be used; the message names the file and line."""


def load_hotword_file(path: str | Path) -> tuple[tuple[str, int], ...]:
    """Read FunASR's hotword file format: one "phrase" or "phrase weight" per line, # comments."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HotwordFileError(f"hotword file {path} cannot be read: {exc}") from None
    words: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        phrase, weight = line, DEFAULT_WEIGHT
        head, _, tail = line.rpartition(" ")
        if head and tail.lstrip("-").isdigit():
            phrase, weight = head.strip(), int(tail)
        if not 1 <= weight <= MAX_WEIGHT:
            raise HotwordFileError(f"{path}:{number}: weight must be 1..{MAX_WEIGHT}, got {weight}")
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

"""SubRip (.srt) text from final captions."""

from __future__ import annotations


def timestamp(ms: int) -> str:
    hours, rest = divmod(max(0, int(ms)), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{millis:03d}"


def to_srt(finals: list[dict]) -> str:
    """`finals` are final replies (start_ms, end_ms, final_text); empty captions are skipped."""
    blocks: list[str] = []
    for reply in finals:
        text = reply.get("final_text", reply.get("text", "")).strip()
        if not text:
            continue
        span = f"{timestamp(reply['start_ms'])} --> {timestamp(reply['end_ms'])}"
        blocks.append(f"{len(blocks) + 1}\n{span}\n{text}\n")
    return "\n".join(blocks)

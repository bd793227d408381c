"""Collapse runs of a phrase repeated more than twice: the last guard against a decoder stuck in a loop."""

from __future__ import annotations

import re

# One token: a CJK character (those languages write no spaces), or a run of anything else that is
# not space, each with the whitespace before it so the text can be put back together unchanged.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"(\s*)([{_CJK}]|[^\s{_CJK}]+)")
_PUNCT = re.compile(r"[^\w]+")


def _key(token: str) -> str:
    """Tokens compare without case and punctuation: "Ask not," repeats "ask not."."""
    return _PUNCT.sub("", token.lower()) or token


def collapse_repeats(text: str, keep: int = 2, max_phrase: int = 16) -> tuple[str, int]:
    """`text` with every phrase of up to `max_phrase` tokens that repeats back to back more than
    `keep` times cut down to `keep` repetitions; also returns how many repetitions were removed."""
    parts = _TOKEN.findall(text)
    keys = [_key(token) for _, token in parts]
    removed = 0
    changed = True
    while changed:
        changed = False
        for size in range(1, min(max_phrase, len(keys) // (keep + 1)) + 1):
            i = 0
            while i + size * (keep + 1) <= len(keys):
                phrase = keys[i : i + size]
                count = 1
                while keys[i + count * size : i + (count + 1) * size] == phrase:
                    count += 1
                if count > keep:
                    cut_from, cut_to = i + keep * size, i + count * size
                    # the last copy keeps its own punctuation (it ended the run: "... ask not.")
                    tail = parts[cut_to - 1][1]
                    del parts[cut_from:cut_to]
                    del keys[cut_from:cut_to]
                    if _key(tail) != tail and parts[cut_from - 1][1] != tail:
                        parts[cut_from - 1] = (parts[cut_from - 1][0], tail)
                    removed += count - keep
                    changed = True
                i += 1
    return "".join(space + token for space, token in parts).strip(), removed

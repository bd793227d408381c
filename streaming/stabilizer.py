"""Stable/unstable split of partial hypotheses for one segment.

A token becomes stable when two consecutive decodes agree on it (and on everything before it).
Stable text only grows: it is what append-only clients (FunASR's `text += delta`) have printed.
Tokens are space-separated words, except that every CJK character is a token of its own: Chinese
is written without spaces, and a whole sentence as one "word" would never become stable.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartialText:
    stable: str  # every token committed so far in this segment
    unstable: str  # the rest of the newest hypothesis
    delta: str  # tokens that became stable with this hypothesis (what append-only clients add)


class PartialStabilizer:
    def __init__(self) -> None:
        self._previous: list[str] = []
        self._committed: list[str] = []

    @property
    def committed(self) -> list[str]:
        return list(self._committed)

    def update(self, hypothesis: str) -> PartialText:
        """A re-decode of the whole segment so far; it may revise anything not yet committed."""
        words = tokenize(hypothesis)
        agreed = 0
        for old, new in zip(self._previous, words):
            if _norm(old) != _norm(new):
                break
            agreed += 1
        self._previous = words
        return self._commit_up_to(words, agreed)

    def settle(self, hypothesis: str) -> PartialText:
        """A hypothesis the engine will not revise (a streaming model's text so far): all of it is stable."""
        words = tokenize(hypothesis)
        self._previous = words
        return self._commit_up_to(words, len(words))

    def _commit_up_to(self, words: list[str], agreed: int) -> PartialText:
        delta: list[str] = []
        # Committed tokens are already on screen; agreement beyond them commits more, even if a
        # newer decode spells an already committed token differently.
        if agreed > len(self._committed):
            delta = words[len(self._committed) : agreed]
            self._committed.extend(delta)
        # If the newest decode contradicts committed tokens, those stay; only what lies beyond shows.
        unstable = words[len(self._committed) :]
        return PartialText(join(self._committed), join(unstable), join(delta))

    def final_delta(self, final_text: str) -> str:
        """What an append-only client must add to its committed tokens to end with the final text.

        The final may add punctuation between committed tokens (a punctuation model ran); those marks
        cannot be inserted into printed text, so the committed tokens are matched past them and only
        what follows the last committed token is added."""
        tokens = tokenize(final_text)
        matched, position = 0, 0
        while matched < len(self._committed) and position < len(tokens):
            if _norm(tokens[position]) == _norm(self._committed[matched]):
                matched += 1
            elif _norm(tokens[position]):  # a real disagreement (e.g. ITN rewrote words): count tokens
                return join(tokens[len(self._committed) :])
            position += 1
        return join(tokens[position:])


def is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x3000 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF


def tokenize(text: str) -> list[str]:
    """Words and single CJK characters, each keeping the whitespace before it (so join restores it)."""
    tokens: list[str] = []
    token = ""
    for char in text:
        if is_cjk(char):
            if token.strip():
                tokens.append(token)
                token = ""
            tokens.append(token + char)
            token = ""
        elif char.isspace() and token.strip():
            tokens.append(token)
            token = char
        else:
            token += char
    if token.strip():
        tokens.append(token)
    return tokens


def join(tokens: list[str]) -> str:
    """Inverse of tokenize, without leading or trailing whitespace."""
    return "".join(tokens).strip()


def _norm(token: str) -> str:
    # Whisper flips punctuation and case between decodes; that is not a disagreement on the word.
    return "".join(ch for ch in token.lower() if ch.isalnum())

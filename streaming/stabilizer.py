"""Stable/unstable split of partial hypotheses for one segment.

A word becomes stable when two consecutive decodes agree on it (and on everything before it).
Stable text only grows: it is what append-only clients (FunASR's `text += delta`) have printed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PartialText:
    stable: str  # every word committed so far in this segment
    unstable: str  # the rest of the newest hypothesis
    delta: str  # words that became stable with this hypothesis (what append-only clients add)


class PartialStabilizer:
    def __init__(self) -> None:
        self._previous: list[str] = []
        self._committed: list[str] = []

    @property
    def committed(self) -> list[str]:
        return list(self._committed)

    def update(self, hypothesis: str) -> PartialText:
        words = hypothesis.split()
        agreed = 0
        for old, new in zip(self._previous, words):
            if _norm(old) != _norm(new):
                break
            agreed += 1
        self._previous = words
        delta: list[str] = []
        # Committed words are already on screen; agreement beyond them commits more, even if a
        # newer decode spells an already committed word differently.
        if agreed > len(self._committed):
            delta = words[len(self._committed) : agreed]
            self._committed.extend(delta)
        # If the newest decode contradicts committed words, those stay; only what lies beyond shows.
        unstable = words[len(self._committed) :]
        return PartialText(" ".join(self._committed), " ".join(unstable), " ".join(delta))

    def final_delta(self, final_text: str) -> str:
        """What an append-only client must add to its committed words to end with the final text."""
        return " ".join(final_text.split()[len(self._committed) :])


def _norm(word: str) -> str:
    # Whisper flips punctuation and case between decodes; that is not a disagreement on the word.
    return "".join(ch for ch in word.lower() if ch.isalnum())

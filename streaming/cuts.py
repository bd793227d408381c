"""Joins at cuts for length: which finals wait for the one before them, and where their words begin.

A segment cut at max_segment_s ends inside speech, often inside a word. The segment after it is
decoded only once the final before the cut is known, with the audio before the cut as context, and
keeps only the words after where that final's last word ended: the word the cut went through is
then written by exactly one side (each side placing it by its own word times could leave it to the
other, or keep it twice). Pure bookkeeping, shared by live streams and file jobs: the caller
decodes, in segment order, and reports each final back.

    joins = CutJoins()
    if not joins.waits(event): submit(joins.request(event))      # as the segment closes
    ...                                                          # finals in segment order:
    if joins.waits(event): submit(joins.request(event))          # its predecessor is known now
    joins.decoded(event, result)                                 # (None: the decode failed)

An engine that can force a prefix (Whisper) is also given the words of the final before the cut that
lie in the context (`prefix`): it goes on after them instead of transcribing them again, so a word it
would hear differently the second time ("that" as "and") cannot come back doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from streaming.events import Audio, SegmentClosed, sample_at, with_context


@dataclass(frozen=True)
class Join:
    """What to decode for a segment: its audio, with `context_samples` of the stream before it and
    `after_samples` after it (streaming.events.with_context), and `prefix`, the words of the final
    before a cut for length that lie in that context ("" elsewhere)."""

    audio: Audio
    context_samples: int
    after_samples: int
    prefix: str = ""


class DecodedWords(Protocol):
    """What a join needs of a final's decode (inference.engines.base.DecodeResult has it): where
    its last word ends (ms into the audio decoded; None: no word placed) and its words, each as
    (text, start ms, end ms)."""

    @property
    def words_end_ms(self) -> int | None: ...

    @property
    def words(self) -> Sequence[tuple[str, int, int]] | None: ...


class CutJoins:
    """One stream's (or file's) state between a final cut for length and the decode after it."""

    def __init__(self, words_end: int | None = None, tail: Sequence[tuple[str, int]] = ()) -> None:
        """A file resumed right after a cut for length (its final committed before a restart):
        `words_end`, the sample where that final's words ended, and `tail`, its words with the
        sample where each starts, counted from where decoding resumes (negative: before it)."""
        self._words_end = words_end  # the last final was cut for length: the sample where its words ended
        self._tail = tuple(tail) if words_end is not None else ()  # and its words, each with its start sample

    @staticmethod
    def waits(event: SegmentClosed) -> bool:
        """True when `event` follows a cut for length: decode it only after the final before it."""
        return event.follows_cut

    def request(self, event: SegmentClosed) -> Join:
        """What to decode for `event`: for a segment that waits, call this only once the final
        before it was reported to `decoded`."""
        audio, context_samples, after_samples = with_context(event, self._words_end if event.follows_cut else None)
        return Join(audio, context_samples, after_samples, self._prefix(event))

    def _prefix(self, event: SegmentClosed) -> str:
        """For a segment that follows a cut: the words of the final before it that lie in its
        context (started after the context's first sample), as that final wrote them."""
        if not event.follows_cut or self._words_end is None:
            return ""
        context_start = event.start - len(event.context)
        return "".join(word for word, start in self._tail if start >= context_start).strip()

    def decoded(self, event: SegmentClosed, result: DecodedWords | None) -> None:
        """The final of `event` is known (finals are reported in segment order); `result` is None
        when its decode failed. Without a placed word the next segment's words begin at the cut."""
        if not event.is_cut or result is None or result.words_end_ms is None:
            self._words_end, self._tail = None, ()
            return
        self._words_end = sample_at(event, result.words_end_ms)
        self._tail = tuple((word, sample_at(event, start)) for word, start, _ in result.words or ())

    def carried(self) -> tuple[int, tuple[tuple[str, int], ...]] | None:
        """What the next segment joins after the finals reported so far: the sample where the last
        one's words ended and its words with their start samples, as CutJoins(words_end, tail)
        takes them back (a file keeps them with its resume point); None when the last final was
        not cut for length, or placed no word."""
        return None if self._words_end is None else (self._words_end, self._tail)

    def skipped(self) -> None:
        """The next final was dropped unseen (its decode was cancelled): nothing carries over."""
        self._words_end = None
        self._tail = ()

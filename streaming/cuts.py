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
    if joins.waits(event): submit(joins.request(event), joins.prefix(event))  # its predecessor is known now
    joins.decoded(event, result.words_end_ms, result.words)      # (None: failed, or no words)

An engine that can force a prefix (Whisper) is also given the words of the final before the cut that
lie in the context (`prefix`): it goes on after them instead of transcribing them again, so a word it
would hear differently the second time ("that" as "and") cannot come back doubled.
"""

from __future__ import annotations

from collections.abc import Sequence

from streaming.events import Audio, SegmentClosed, sample_at, with_context


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

    def request(self, event: SegmentClosed) -> tuple[Audio, int, int]:
        """What to decode for `event`, as streaming.events.with_context gives it: for a segment
        that waits, call this only once the final before it was reported to `decoded`."""
        return with_context(event, self._words_end if event.follows_cut else None)

    def prefix(self, event: SegmentClosed) -> str:
        """For a segment that follows a cut: the words of the final before it that lie in its
        context (started after the context's first sample), as that final wrote them."""
        if not event.follows_cut or self._words_end is None:
            return ""
        context_start = event.start - len(event.context)
        return "".join(word for word, start in self._tail if start >= context_start).strip()

    def decoded(
        self,
        event: SegmentClosed,
        words_end_ms: int | None,
        words: Sequence[tuple[str, int, int]] | None = None,
    ) -> None:
        """The final of `event` is known (finals are reported in segment order). `words_end_ms`:
        the result's DecodeResult.words_end_ms; None when the decode failed or placed no word,
        and the next segment's words then begin at the cut itself. `words`: DecodeResult.words."""
        cut = event.reason == "max_length"
        self._words_end = sample_at(event, words_end_ms) if cut and words_end_ms is not None else None
        self._tail = tuple((word, sample_at(event, start)) for word, start, _ in words or ()) if cut else ()

    def skipped(self) -> None:
        """The next final was dropped unseen (its decode was cancelled): nothing carries over."""
        self._words_end = None
        self._tail = ()

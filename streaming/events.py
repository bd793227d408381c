"""Typed events the streaming core emits; sample indices are absolute, at 16 kHz."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000

Audio: TypeAlias = npt.NDArray[np.float32]  # samples in [-1, 1) at SAMPLE_RATE, mono
Pcm16: TypeAlias = npt.NDArray[np.int16]  # samples as they came off the wire
Samples: TypeAlias = Audio | Pcm16  # either: the reader converts


def _no_audio() -> Audio:
    return np.zeros(0, dtype=np.float32)


def samples_to_ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


@dataclass(frozen=True)
class SpeechStarted:
    """A new segment opened; `start` includes pre-roll, `speech_start` is the detected onset."""

    segment_id: int
    start: int
    speech_start: int


@dataclass(frozen=True)
class PartialDue:
    """Time to re-decode the open segment: `audio` is everything from its start up to `end`."""

    segment_id: int
    start: int
    end: int
    speech_start: int
    audio: Audio = field(repr=False, compare=False)
    context: Audio = field(default_factory=_no_audio, repr=False, compare=False)  # see SegmentClosed


CUT_REASONS = frozenset({"max_length", "pause"})


@dataclass(frozen=True)
class SegmentClosed:
    """A segment ended. `audio` spans [start, end); speech itself spans [speech_start, speech_end)."""

    segment_id: int
    start: int
    end: int
    speech_start: int
    speech_end: int
    reason: str  # "silence" | "pause" (a long segment's shorter pause) | "max_length" | "end_of_stream"
    audio: Audio = field(repr=False, compare=False)
    # The stream's audio just before `start` (up to SessionSettings.context_s): a recogniser that
    # hears it understands a short segment as it would inside the whole recording.
    context: Audio = field(default_factory=_no_audio, repr=False, compare=False)
    # A cut segment (is_cut: no pause, or a short one): the audio right after `end`
    # (SessionSettings.cut_lookahead_s), so the word the cut went through can be heard whole, and
    # given to one side of the cut only.
    after: Audio = field(default_factory=_no_audio, repr=False, compare=False)
    follows_cut: bool = False  # starts where the previous segment was cut (is_cut; see with_context)

    @property
    def start_ms(self) -> int:
        return samples_to_ms(self.speech_start)

    @property
    def is_cut(self) -> bool:
        """Closed while the speaker may be inside a word (at its length limit, or at a pause shorter
        than silence_ms): the next segment joins it as a cut (streaming/cuts.py)."""
        return self.reason in CUT_REASONS

    @property
    def end_ms(self) -> int:
        return samples_to_ms(self.speech_end)


def with_context(event: PartialDue | SegmentClosed, words_from: int | None = None) -> tuple[Audio, int, int]:
    """What to decode for `event`: its context, its audio and the audio after it (cuts only), with
    the lengths of the first and the last: the words between them are the segment's.

    `words_from` (a segment that follows a length cut): the sample where the words of the final
    before the cut ended. The segment's words then begin there instead of at the cut, so the word
    the cut went through is written by exactly one side: both sides placing it by their own word
    times could each leave it to the other (two alignments of one word differ by tens of ms)."""
    after = event.after if isinstance(event, SegmentClosed) else _no_audio()
    if not len(event.context) and not len(after) and words_from is None:
        return event.audio, 0, 0
    audio = np.concatenate([event.context, event.audio, after])
    context = len(event.context)
    if words_from is not None:
        context = min(max(0, context + words_from - event.start), len(audio) - len(after))
    return audio, context, len(after)


def sample_at(event: PartialDue | SegmentClosed, ms: int) -> int:
    """The stream's sample `ms` into what with_context gave to decode for `event` (context first)."""
    return event.start - len(event.context) + ms * SAMPLE_RATE // 1000


Event = SpeechStarted | PartialDue | SegmentClosed

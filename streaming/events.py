"""Typed events the streaming core emits; sample indices are absolute, at 16 kHz."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 16000


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
    audio: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class SegmentClosed:
    """A segment ended. `audio` spans [start, end); speech itself spans [speech_start, speech_end)."""

    segment_id: int
    start: int
    end: int
    speech_start: int
    speech_end: int
    reason: str  # "silence" | "max_length" | "end_of_stream"
    audio: np.ndarray = field(repr=False, compare=False)

    @property
    def start_ms(self) -> int:
        return samples_to_ms(self.speech_start)

    @property
    def end_ms(self) -> int:
        return samples_to_ms(self.speech_end)


Event = SpeechStarted | PartialDue | SegmentClosed

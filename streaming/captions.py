"""Caption policy for one stream, sans I/O: segmenter events and decode results in, decode
requests and partial/final captions out.

The connection hands every event of the stream's session to `CaptionPipeline.on_event`, submits the
`DecodeRequest`s it gets back, and feeds each result in again (`partial_decoded`, `final_decoded`);
what comes out is a caption to send. Nothing here awaits, calls a model or reads a clock: times
are passed in. Segment ids and times in captions continue the caption session's (`segment_base`,
`time_base_ms`); those in requests are the stream's own.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streaming.chunker import SegmentChunker
from streaming.cuts import CutJoins
from streaming.events import Audio, PartialDue, SegmentClosed, SpeechStarted, samples_to_ms, with_context
from streaming.stabilizer import PartialStabilizer

# Engine result fields a final carries: timing, and what the hallucination guards did (a decode
# dropped as not speech, a temperature fallback, repeated phrases removed).
FINAL_EXTRA_FIELDS = ("queue_ms", "decode_ms", "dropped", "temperature", "repeats_removed")


class Lane(enum.Enum):
    """What kind of decode a request is, and so the executor lane it goes to."""

    PARTIAL = "partial"  # a re-decode of the open segment so far; later ones may revise it
    STEP = "step"  # the streaming model's next chunk of the open segment; never revised
    FINAL = "final"  # a closed segment, decoded whole


@dataclass(frozen=True)
class SegmentOpened:
    """Speech began: its final goes before later segments' (and `streamed`: a fresh streaming-model state)."""

    segment_id: int
    streamed: bool


@dataclass(frozen=True)
class PartialShed:
    """Overload: a partial was not decoded (finals keep flowing)."""

    segment_id: int


@dataclass(frozen=True)
class FinalDeferred:
    """A closed segment whose decode waits for the final before it (it follows a length cut): its
    place in the order of finals. When that final is out, `final_request` says what to decode."""

    segment_id: int


@dataclass(frozen=True, eq=False)
class DecodeRequest:
    lane: Lane
    segment_id: int  # the stream's own numbering
    audio: Audio  # context first, then the segment's audio, then audio after a cut
    start: int  # the segment's speech start and the end of what is decoded (stream samples): a partial's times
    end: int
    context_samples: int = 0
    after_samples: int = 0
    flush: bool = False  # STEP: the segment's last chunk; the streaming model's text for it is the final
    prefix: str = ""  # FINAL after a cut for length: the words before the cut in its context (cuts.Join.prefix)

    @property
    def is_final(self) -> bool:
        return self.lane is Lane.FINAL or self.flush


Action = SegmentOpened | PartialShed | FinalDeferred | DecodeRequest


class DecodeOutcome(Protocol):
    """What a decode returned (inference.engines.base.DecodeResult has this shape)."""

    text: str
    timestamps: tuple[tuple[int, int], ...] | None
    extra: dict[str, Any]
    words_end_ms: int | None
    words: tuple[tuple[str, int, int], ...] | None


@dataclass(frozen=True)
class PartialCaption:
    segment_id: int
    start_ms: int
    end_ms: int
    delta: str  # tokens that became stable with this decode (what append-only clients add)
    stable: str
    unstable: str


@dataclass(frozen=True)
class FinalCaption:
    segment_id: int
    start_ms: int
    end_ms: int
    text: str
    append_text: str  # what an append-only client adds to the partials it printed
    end_reason: str
    timestamps: tuple[tuple[int, int], ...] | None  # session time
    final_ms: int  # segment closed -> final ready (waiting for the model, the model, earlier finals)
    endpoint_ms: int | None = None  # last speech heard -> segment closed
    queue_ms: int | None = None  # waiting for the model
    decode_ms: int | None = None  # the model call
    dropped: str | None = None  # a decode the engine's guards dropped, and why
    temperature: float | None = None  # a temperature fallback
    repeats_removed: int | None = None
    error: str | None = None  # the decode failed: why

    def timing(self) -> dict[str, Any]:
        """The fields a final reply carries beyond its text, in the order they are sent."""
        fields: dict[str, Any] = {k: v for k in FINAL_EXTRA_FIELDS if (v := getattr(self, k)) is not None}
        fields["final_ms"] = self.final_ms
        if self.endpoint_ms is not None:
            fields["endpoint_ms"] = self.endpoint_ms
        if self.error is not None:
            fields["error"] = self.error
        return fields


@dataclass(frozen=True)
class _PendingFinal:
    event: SegmentClosed
    closed_at: float
    endpoint_s: float | None
    deferred: bool  # decoded only once the final before it is known (the segment after a length cut)


class CaptionPipeline:
    """One stream's captions: what to decode for each segmenter event, and the replies its results make.

    `mode`: the client's ("2pass", "online", "offline"). `chunk_samples`: a streaming model follows
    the segmenter and takes chunks this long (None: partials are re-decodes of the segment so far)."""

    def __init__(self, mode: str, chunk_samples: int | None = None, segment_base: int = 0, time_base_ms: int = 0):
        self.mode = mode
        self.segment_base = segment_base
        self.time_base_ms = time_base_ms
        self.segments_opened = 0
        self._chunker = SegmentChunker(chunk_samples) if chunk_samples is not None else None
        self.streamed_segment: int | None = None  # the segment the streaming model follows; None = none
        self._stabilizers: dict[int, PartialStabilizer] = {}
        self._closed: set[int] = set()
        self._finals: deque[_PendingFinal] = deque()  # closed segments whose final is not out, in order
        self._joins = CutJoins()  # finals after a cut for length wait for the one before it

    # --- numbering -------------------------------------------------------------------------------
    def segment_id(self, local_id: int) -> int:
        return self.segment_base + local_id

    def ms(self, samples: int) -> int:
        return self.time_base_ms + samples_to_ms(samples)

    @property
    def next_segment_id(self) -> int:
        """The caption session's next stream continues its segment ids here."""
        return self.segment_base + self.segments_opened

    @property
    def finals_pending(self) -> int:
        return len(self._finals)

    # --- events in, requests out ----------------------------------------------------------------
    def on_event(
        self,
        event: SpeechStarted | PartialDue | SegmentClosed,
        now: float,
        overloaded: bool = False,
        endpoint_s: float | None = None,
    ) -> list[Action]:
        """What to do for one segmenter event. `overloaded`: partials are shed; `endpoint_s`: how long
        ago the closed segment's last speech arrived (None when unknown)."""
        if isinstance(event, SpeechStarted):
            return [self._opened(event)]
        if isinstance(event, PartialDue):
            return self._partial_due(event, overloaded)
        return self._closed_segment(event, now, endpoint_s)

    def _opened(self, event: SpeechStarted) -> SegmentOpened:
        self._stabilizers[event.segment_id] = PartialStabilizer()
        self.segments_opened = max(self.segments_opened, event.segment_id + 1)
        if self._chunker is not None:
            self.streamed_segment = event.segment_id
        return SegmentOpened(event.segment_id, streamed=self._chunker is not None)

    def _partial_due(self, event: PartialDue, overloaded: bool) -> list[Action]:
        if self._chunker is not None:  # hand the streaming model the new whole chunks of the segment
            if self.streamed_segment != event.segment_id:
                return []  # this segment's streaming was given up (overload)
            if overloaded and self.mode == "2pass":
                # Degrade: the offline pass will caption this segment; stop streaming it.
                self.streamed_segment = None
                return [PartialShed(event.segment_id)]
            return self._steps(
                event.segment_id, event.speech_start, event.end, self._chunker.feed(event.segment_id, event.audio)
            )
        if overloaded:  # degrade: partial cadence drops first, finals keep flowing
            return [PartialShed(event.segment_id)]
        audio, context, _ = with_context(event)
        return [DecodeRequest(Lane.PARTIAL, event.segment_id, audio, event.speech_start, event.end, context)]

    def _closed_segment(self, event: SegmentClosed, now: float, endpoint_s: float | None) -> list[Action]:
        self._closed.add(event.segment_id)
        requests: list[Action] = []
        deferred = False
        if self.mode == "online" and self.streamed_segment == event.segment_id:
            # The rest of the segment goes through the streaming model; its flush is the final.
            assert self._chunker is not None
            *chunks, tail = self._chunker.finish(event.segment_id, event.audio)
            requests += self._steps(event.segment_id, event.speech_start, event.speech_end, chunks)
            requests.append(
                DecodeRequest(Lane.STEP, event.segment_id, tail, event.speech_start, event.speech_end, flush=True)
            )
        elif self._joins.waits(event):
            deferred = True  # decoded once the final before the cut is known (final_request)
            requests.append(FinalDeferred(event.segment_id))
        else:
            requests.append(self._final_request(event))
        self.streamed_segment = None
        self._finals.append(_PendingFinal(event, now, endpoint_s, deferred))
        return requests

    def _steps(self, segment_id: int, start: int, end: int, chunks: list[Audio]) -> list[Action]:
        return [DecodeRequest(Lane.STEP, segment_id, chunk, start, end) for chunk in chunks]

    def _final_request(self, event: SegmentClosed) -> DecodeRequest:
        join = self._joins.request(event)
        start, end = event.speech_start, event.speech_end
        return DecodeRequest(
            Lane.FINAL,
            event.segment_id,
            join.audio,
            start,
            end,
            join.context_samples,
            join.after_samples,
            prefix=join.prefix,
        )

    # --- results in, captions out ---------------------------------------------------------------
    def partial_decoded(self, request: DecodeRequest, text: str) -> PartialCaption | None:
        """The caption a partial decode makes; None when there is nothing new to show or the
        segment's final is on its way and replaces it."""
        settled = request.lane is Lane.STEP  # a streaming model never revises what it has said
        if request.segment_id in self._closed and not (settled and self.mode == "online"):
            return None
        stabilizer = self._stabilizers.setdefault(request.segment_id, PartialStabilizer())
        split = stabilizer.settle(text) if settled else stabilizer.update(text)
        if not (split.stable or split.unstable):
            return None
        return PartialCaption(
            self.segment_id(request.segment_id),
            self.ms(request.start),
            self.ms(request.end),
            split.delta,
            split.stable,
            split.unstable,
        )

    def final_request(self) -> DecodeRequest:
        """The decode of the next final's segment, deferred until now: it follows a length cut, and
        its words begin where those of the final before the cut ended."""
        pending = self._finals[0]
        assert pending.deferred
        return self._final_request(pending.event)

    def final_cancelled(self) -> None:
        """The next final's decode was cancelled (its client left): nothing is sent or kept."""
        self._finals.popleft()
        self._joins.skipped()

    def final_decoded(self, result: DecodeOutcome | None, now: float, failure: str | None = None) -> FinalCaption:
        """The next final in segment order, from its decode `result` (None with `failure` when it failed)."""
        pending = self._finals.popleft()
        event = pending.event
        self._joins.decoded(event, result)
        text, timestamps, extra = "", None, {}
        if result is not None:
            text, timestamps, extra = result.text, result.timestamps, result.extra
        stabilizer = self._stabilizers.get(event.segment_id, PartialStabilizer())
        return FinalCaption(
            segment_id=self.segment_id(event.segment_id),
            start_ms=self.ms(event.speech_start),
            end_ms=self.ms(event.speech_end),
            text=text,
            append_text=stabilizer.final_delta(text),
            end_reason=event.reason,
            timestamps=_shift(timestamps, self.ms(event.start - len(event.context))),  # (the audio decoded began there)
            final_ms=round((now - pending.closed_at) * 1000),
            endpoint_ms=None if pending.endpoint_s is None else round(pending.endpoint_s * 1000),
            error=None if failure is None else f"decoding failed: {failure}",
            **{k: extra[k] for k in FINAL_EXTRA_FIELDS if k in extra},
        )


def _shift(timestamps: tuple[tuple[int, int], ...] | None, offset_ms: int) -> tuple[tuple[int, int], ...] | None:
    # Engines time tokens from the start of the audio decoded (the segment's context first, when it
    # has one: with_context); clients want session time.
    if not timestamps:
        return None
    return tuple((a + offset_ms, b + offset_ms) for a, b in timestamps)


class ArrivalLog:
    """When recent audio arrived: (16 kHz samples received so far, time) for the last `size` frames,
    in preallocated arrays (no Python objects per frame: hundreds of streams x 10 frames a second
    would keep the garbage collector busy). Tells when the server heard a segment's last speech."""

    def __init__(self, size: int) -> None:
        self._received = np.full(size, -1, dtype=np.int64)
        self._at = np.zeros(size, dtype=np.float64)
        self._next = 0

    def add(self, received: int, at: float) -> None:
        slot = self._next % len(self._received)
        self._received[slot], self._at[slot] = received, at
        self._next += 1

    def time_of(self, sample: int) -> float | None:
        """Arrival time of the frame holding `sample` (None if it is older than what is kept)."""
        held = self._received >= sample
        if not held.any() or (self._next >= len(self._received) and held.all()):
            return None  # not yet received, or already forgotten
        return float(self._at[held][np.argmin(self._received[held])])

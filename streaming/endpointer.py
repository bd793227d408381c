"""Speech/silence decisions per 10 ms frame -> segment open/close, in frame units.

Rules: `speech_onset_ms` of consecutive speech opens a segment, which starts `preroll_ms` earlier
(never before the previous segment's end); `silence_ms` of consecutive silence closes it, and once
the segment is `long_segment_s` old a shorter pause of `long_silence_ms` does (a word waits for the
end of its segment before its final, so long segments are closed at the speaker's next breath); a
segment reaching `max_segment_s` is cut at the quietest frame of its last `cut_search_ms`, and the
remainder continues as a new segment, so no audio is dropped or duplicated.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

FRAME_MS = 10


@dataclass(frozen=True)
class EndpointSettings:
    silence_ms: int
    max_segment_s: float
    speech_onset_ms: int
    preroll_ms: int
    cut_search_ms: int
    long_segment_s: float = 0.0  # 0 = every segment waits for silence_ms
    long_silence_ms: int = 0

    def __post_init__(self) -> None:
        if self.silence_ms < FRAME_MS:
            raise ValueError(f"silence_ms must be at least {FRAME_MS}, got {self.silence_ms}")
        if self.max_segment_s * 1000 < 4 * self.cut_search_ms or self.max_segment_s <= 0:
            raise ValueError(f"max_segment_s ({self.max_segment_s}) must be positive and at least 4x cut_search_ms")
        if self.speech_onset_ms < FRAME_MS:
            raise ValueError(f"speech_onset_ms must be at least {FRAME_MS}, got {self.speech_onset_ms}")
        if self.preroll_ms < 0:
            raise ValueError(f"preroll_ms must not be negative, got {self.preroll_ms}")
        if self.long_segment_s < 0:
            raise ValueError(f"long_segment_s must not be negative, got {self.long_segment_s}")
        if self.long_segment_s and not FRAME_MS <= self.long_silence_ms <= self.silence_ms:
            raise ValueError(
                f"long_silence_ms must be between {FRAME_MS} and silence_ms ({self.silence_ms}), "
                f"got {self.long_silence_ms}"
            )


@dataclass(frozen=True)
class Opened:
    segment_id: int
    start: int  # frame index, pre-roll included
    speech_start: int


@dataclass(frozen=True)
class Closed:
    segment_id: int
    start: int
    end: int  # exclusive frame index
    speech_start: int
    speech_end: int
    reason: str


class Endpointer:
    def __init__(self, settings: EndpointSettings) -> None:
        self._silence_frames = settings.silence_ms // FRAME_MS
        self._long_frames = int(settings.long_segment_s * 1000) // FRAME_MS  # 0 = no shorter pause
        self._long_silence_frames = settings.long_silence_ms // FRAME_MS
        self._max_frames = int(settings.max_segment_s * 1000) // FRAME_MS
        self._onset_frames = settings.speech_onset_ms // FRAME_MS
        self._preroll_frames = settings.preroll_ms // FRAME_MS
        self._levels: deque[float] = deque(maxlen=max(1, settings.cut_search_ms // FRAME_MS))
        self._frame = 0  # index of the next frame to be stepped
        self._next_id = 0
        self._floor = 0  # segments never start before this frame (end of the previous one)
        self._run_start: int | None = None  # first frame of the current speech run while idle
        self._open: Opened | None = None
        self._last_speech_end = 0
        self._silence_run = 0

    @property
    def in_segment(self) -> bool:
        return self._open is not None

    @property
    def open_segment(self) -> Opened | None:
        return self._open

    @property
    def onset_pending(self) -> bool:
        """Speech has started but is not yet long enough to open a segment."""
        return self._run_start is not None

    @property
    def onset_start(self) -> int | None:
        """First frame of a speech run not yet long enough to open a segment (None if none)."""
        return self._run_start

    @property
    def silence_frames_to_close(self) -> int | None:
        """Silent frames still needed to close the open segment (None when none is open)."""
        if self._open is None:
            return None
        return self._silence_needed(self._frame) - self._silence_run

    @property
    def last_speech_end(self) -> int:
        """Frame after the newest speech frame of the open segment."""
        return self._last_speech_end

    @property
    def frames_seen(self) -> int:
        return self._frame

    def step(self, is_speech: bool, level_dbfs: float) -> list[Opened | Closed]:
        frame = self._frame
        self._frame += 1
        self._levels.append(level_dbfs)
        if self._open is None:
            return self._step_idle(frame, is_speech)
        return self._step_open(frame, is_speech)

    def finish(self) -> list[Opened | Closed]:
        """End of stream: close the open segment, or open-and-close a speech run still too short."""
        out: list[Opened | Closed] = []
        if self._open is None and self._run_start is not None:
            out.append(self._open_at(self._run_start))
            self._last_speech_end = self._frame
        if self._open is not None:
            out.append(self._close(self._frame, "end_of_stream"))
        return out

    def _step_idle(self, frame: int, is_speech: bool) -> list[Opened | Closed]:
        if not is_speech:
            self._run_start = None
            return []
        if self._run_start is None:
            self._run_start = frame
        if frame + 1 - self._run_start < self._onset_frames:
            return []
        opened = self._open_at(self._run_start)
        self._last_speech_end = frame + 1
        return [opened]

    def _step_open(self, frame: int, is_speech: bool) -> list[Opened | Closed]:
        assert self._open is not None
        if is_speech:
            self._last_speech_end = frame + 1
            self._silence_run = 0
        else:
            self._silence_run += 1
            if self._silence_run >= self._silence_frames:
                return [self._close(frame + 1, "silence")]
            if self._silence_run >= self._silence_needed(frame + 1):
                # A pause shorter than silence_ms may be inside a word: the next segment joins
                # this one as it joins a cut for length (streaming/cuts.py).
                return [self._close(frame + 1, "pause")]
        if frame + 1 - self._open.start >= self._max_frames:
            return self._cut(frame + 1)
        return []

    def _silence_needed(self, end: int) -> int:
        """Silent frames that close the open segment if it ended at frame `end`."""
        assert self._open is not None
        if self._long_frames and end - self._open.start >= self._long_frames:
            return self._long_silence_frames
        return self._silence_frames

    def _open_at(self, speech_start: int) -> Opened:
        start = max(self._floor, speech_start - self._preroll_frames)
        self._open = Opened(self._next_id, start, speech_start)
        self._next_id += 1
        self._run_start = None
        self._silence_run = 0
        return self._open

    def _close(self, end: int, reason: str) -> Closed:
        assert self._open is not None
        seg = self._open
        speech_end = min(max(self._last_speech_end, seg.speech_start), end)
        closed = Closed(seg.segment_id, seg.start, end, seg.speech_start, speech_end, reason)
        self._open = None
        self._floor = end
        self._silence_run = 0
        return closed

    def _cut(self, end: int) -> list[Opened | Closed]:
        # Cut where the speaker is quietest near the limit, so a word is rarely split in two.
        window = list(self._levels)
        quietest = min(range(len(window)), key=window.__getitem__)
        boundary = end - len(window) + quietest + 1
        assert self._open is not None
        speech_was_recent = self._last_speech_end > boundary
        closed = Closed(
            self._open.segment_id,
            self._open.start,
            boundary,
            self._open.speech_start,
            min(max(self._last_speech_end, self._open.speech_start), boundary),
            "max_length",
        )
        self._open = None
        self._floor = boundary
        opened = self._open_at(boundary)
        if not speech_was_recent:
            self._last_speech_end = boundary
        # The silence counted since the last speech frame still counts in the new segment.
        self._silence_run = max(0, end - max(self._last_speech_end, boundary))
        return [closed, opened]

"""One audio stream: PCM bytes -> resample -> ring buffer -> VAD stages -> endpointer -> events.

Phased so the FSMN model can be batched across streams by the caller:
    events = session.push(pcm)          # cheap: decode, resample, energy gate, webrtcvad
    work = session.take_work()          # all audio FSMN has not seen yet (any number of pushes)
    probs = scorer.score([work])[0]     # FSMN, batched with other streams' work
    events += session.apply(probs)      # endpointing decisions -> typed events
push() returns events too: frames below the energy gate are silence whatever FSMN says, so a
segment whose silence they complete closes as the audio arrives, without waiting for the model.
Pushes may go on while a score is in flight; the next take_work() covers them all, so a stream
never falls behind by one model call per chunk. `feed(pcm, scorer)` does it all for tests.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streaming.endpointer import FRAME_MS, Closed, Endpointer, EndpointSettings, Opened
from streaming.events import (
    CUT_REASONS,
    SAMPLE_RATE,
    Audio,
    Event,
    PartialDue,
    Pcm16,
    Samples,
    SegmentClosed,
    SpeechStarted,
)
from streaming.pcm import Resampler, decode_int16, decode_pcm16
from streaming.ring_buffer import RingBuffer, to_int16
from streaming.vad.energy import EnergyGate, frame_levels_dbfs
from streaming.vad.fsmn import SpeechScorer
from streaming.vad.webrtc import WebrtcFrames

FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000


@dataclass(frozen=True)
class SessionSettings:
    sample_rate_hz: int
    endpoint: EndpointSettings
    partial_interval_ms: int  # 0 = never ask for partials
    energy_gate_dbfs: float
    webrtc_aggressiveness: int
    fsmn_speech_threshold: float
    ring_buffer_s: float
    context_s: float = 0.0  # audio before each segment handed on with it (SegmentClosed.context)
    cut_lookahead_s: float = 0.0  # a cut segment (length, or a long one's pause) waits for this much of what follows
    context_max_segment_s: float = 0.0  # segments longer than this get no context (unless they follow a cut); 0 = all
    context_only_after_cuts: bool = False  # only segments that follow a cut get context (file jobs)
    skip_silent_fsmn: bool = True  # False only to compare against the always-score path


@dataclass
class ScoreWork:
    """FSMN input for one push: the stream's scorer state and the 16 kHz int16 samples to score.

    `needed` is False when every frame waiting for FSMN is clear silence (no segment open or
    opening, and no frame both above the energy gate and speech to webrtcvad): then the caller
    skips the model and calls `apply(None)`.
    """

    state: Any
    samples: Samples
    needed: bool = True


# After skipping FSMN over silence, it restarts on this much earlier audio so its memory
# (4 layers x 19 frames of context, plus LFR's 2) is warm again when speech arrives; those
# outputs are dropped.
FSMN_WARMUP_FRAMES = 80

# FSMN's output for a frame needs audio 45 ms past its start (a 25 ms fbank window, then LFR
# stacks two frames ahead), so the newest ~5 heard frames always wait for the next chunk. When
# those frames are all that stands between an open segment and its silence rule, and the cheap
# stages call them silent, the segment closes now instead of one client chunk later (the
# speaker's pause is already long enough). If speech did resume inside them, it opens the next
# segment, which starts exactly where this one ended: no audio is lost either way.
FSMN_LOOKAHEAD_FRAMES = 5


class StreamSession:
    def __init__(self, settings: SessionSettings, new_scorer_state: Callable[[], Any]) -> None:
        self.settings = settings
        self._resampler = Resampler(settings.sample_rate_hz)
        self._buffer = RingBuffer(int(settings.ring_buffer_s * SAMPLE_RATE))
        self._gate = EnergyGate(settings.energy_gate_dbfs)
        self._webrtc = WebrtcFrames(settings.webrtc_aggressiveness)
        self._endpointer = Endpointer(settings.endpoint)
        self._new_scorer_state = new_scorer_state
        self._scorer_state = new_scorer_state()
        self._scorer_stale = False  # FSMN skipped some audio; its state must restart before use
        self._discard = 0  # probabilities still to drop: warm-up after a restart, frames decided early
        self._framed = 0  # absolute sample index up to which cheap stages have run
        self._carry = np.zeros(0, dtype=np.int16)  # samples of an incomplete 10 ms frame
        self._unscored: list[Pcm16] = []  # pushed audio FSMN has not been given yet
        self._unscored_samples = 0
        # Per frame, cheap-stage results waiting for their (delayed) FSMN probability.
        self._pending: deque[tuple[float, bool]] = deque()
        self._partial_samples = settings.partial_interval_ms * SAMPLE_RATE // 1000
        self._context_samples = int(settings.context_s * SAMPLE_RATE)
        self._context_max_samples = int(settings.context_max_segment_s * SAMPLE_RATE)
        self._lookahead_samples = int(settings.cut_lookahead_s * SAMPLE_RATE)
        self._held: SegmentClosed | None = None  # a cut segment, waiting for its look-ahead audio
        self._last_cut = -1  # sample where the last cut went (the next segment starts there)
        self._last_partial_end = 0
        self._finished = False

    @property
    def samples_received(self) -> int:
        """16 kHz samples stored so far (after resampling)."""
        return self._buffer.end

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def samples_decided(self) -> int:
        """16 kHz samples whose speech/silence decision has been made (FSMN look-ahead aside)."""
        return self._endpointer.frames_seen * FRAME_SAMPLES

    @property
    def unscored_s(self) -> float:
        """Audio received that FSMN has not scored yet, in seconds."""
        return self._unscored_samples / SAMPLE_RATE

    def push(self, pcm: bytes) -> list[Event]:
        """Store a PCM16LE frame and run the cheap stages. Raises AudioFormatError on bad bytes.

        Returns the events the cheap stages decide alone (see _step_quiet_frames); the caller must
        handle them like apply()'s."""
        if self._finished:
            raise RuntimeError("stream already finished")
        if self._resampler.input_rate_hz == SAMPLE_RATE:
            self._store(decode_int16(pcm))  # the common case stays in int16 end to end
        else:
            self._store(to_int16(self._resampler.process(decode_pcm16(pcm))))
        return self._release_held(self._step_quiet_frames())

    def _step_quiet_frames(self) -> list[Event]:
        """Decide now the oldest undecided frames that are below the energy gate: they are silence
        whatever FSMN says (it can neither open a segment nor keep one open there), so a pause
        ends its segment as soon as its audio arrives, not one VAD round trip later. FSMN still
        scores them, for its memory; those probabilities are dropped when they come."""
        quiet = 0
        while quiet < len(self._pending) and not self._gate.passes(self._pending[quiet][0]):
            quiet += 1
        return self._silence_ahead_of_fsmn(quiet)

    def _silence_ahead_of_fsmn(self, count: int) -> list[Event]:
        """Step the `count` oldest undecided frames as silence now; FSMN's probabilities for them
        arrive later and are dropped (they are moot)."""
        events: list[Event] = []
        for _ in range(count):
            level, _ = self._pending.popleft()
            self._discard += 1
            for decision in self._endpointer.step(False, level):
                events.append(self._to_event(decision))
        return events

    def _store(self, samples: Pcm16) -> None:
        """Takes int16 samples at 16 kHz."""
        self._buffer.append(samples)
        if len(samples):
            self._unscored.append(samples)
            self._unscored_samples += len(samples)
        data = np.concatenate([self._carry, samples]) if len(self._carry) else samples
        count = len(data) // FRAME_SAMPLES
        self._carry = data[count * FRAME_SAMPLES :].copy()
        if count:
            frames = data[: count * FRAME_SAMPLES].reshape(count, FRAME_SAMPLES)
            levels = frame_levels_dbfs(frames)
            loud = levels >= self.settings.energy_gate_dbfs
            webrtc = np.zeros(count, dtype=bool)
            for i in np.flatnonzero(loud):  # webrtcvad is only asked about frames that pass the gate
                webrtc[i] = self._webrtc.is_speech(frames[i])
            self._pending.extend(zip(levels.tolist(), webrtc.tolist()))
            self._framed += count * FRAME_SAMPLES

    def take_work(self) -> ScoreWork | None:
        """FSMN input for everything pushed since the last call, or None if nothing was."""
        if not self._unscored or self._finished:
            return None
        unscored, self._unscored, self._unscored_samples = self._unscored, [], 0
        # While no segment is open or opening, a frame is speech only if the gate, webrtcvad and
        # FSMN all say so; when no waiting frame has the first two, FSMN cannot change anything.
        clear_silence = (
            self.settings.skip_silent_fsmn
            and not self._endpointer.in_segment
            and not self._endpointer.onset_pending
            and not any(webrtc and self._gate.passes(level) for level, webrtc in self._pending)
        )
        if clear_silence:
            self._scorer_stale = True
            return ScoreWork(None, np.zeros(0, dtype=np.float32), needed=False)
        if self._scorer_stale:
            self._scorer_stale = False
            self._scorer_state = self._new_scorer_state()
            first_pending = self._framed // FRAME_SAMPLES - len(self._pending)
            oldest_frame = -(-self._buffer.start // FRAME_SAMPLES)
            warm_start = max(oldest_frame, first_pending - FSMN_WARMUP_FRAMES)
            self._discard = first_pending - warm_start
            # The buffer holds the unscored audio too, behind the warm-up.
            return ScoreWork(self._scorer_state, self._buffer.read_int16(warm_start * FRAME_SAMPLES, self._buffer.end))
        return ScoreWork(self._scorer_state, np.concatenate(unscored) if len(unscored) > 1 else unscored[0])

    def apply(self, probabilities: npt.NDArray[np.float32] | None) -> list[Event]:
        """Consume FSMN probabilities (one per frame, in order; None when push() said they are not
        needed: every waiting frame is then silence) and return the resulting events."""
        events: list[Event] = []
        threshold = self.settings.fsmn_speech_threshold
        if probabilities is None:
            # Every waiting frame is silence; FSMN missed this audio, so it restarts next time.
            self._scorer_stale = True
            probabilities = np.zeros(len(self._pending), dtype=np.float32)
        elif self._discard:
            dropped = min(self._discard, len(probabilities))
            probabilities, self._discard = probabilities[dropped:], self._discard - dropped
        for prob in np.asarray(probabilities, dtype=np.float32):
            if not self._pending:
                break  # the scorer can never be ahead of framing; ignore any surplus
            level, webrtc_speech = self._pending.popleft()
            fsmn_speech = bool(prob >= threshold) and self._gate.passes(level)
            # Opening needs both models to agree; once open, FSMN alone says whether speech goes on.
            is_speech = fsmn_speech if self._endpointer.in_segment else (fsmn_speech and webrtc_speech)
            for decision in self._endpointer.step(is_speech, level):
                events.append(self._to_event(decision))
        events.extend(self._close_on_lookahead_silence())
        events.extend(self._maybe_partial())
        # Release only once a cut in these events is held: its look-ahead audio must still be
        # there when it is handed on (a burst of audio may cut, close the rest and go quiet at once).
        events = self._release_held(events)
        self._buffer.release_before(self._oldest_needed_sample())
        return events

    def _release_held(self, events: list[Event]) -> list[Event]:
        """A cut segment (SegmentClosed.is_cut) is handed on once `cut_lookahead_s` of the speech
        after the cut has arrived (a recogniser then hears the word the cut went through whole and
        can tell on which side it lies); earlier when a later segment closes (finals stay in order),
        or when its "pause" went on to silence_ms (_pause_was_silence)."""
        out: list[Event] = []
        for event in events:
            if self._held is not None and isinstance(event, SegmentClosed):
                out.append(self._with_after(self._held))
                self._held = None
            if isinstance(event, SegmentClosed) and event.is_cut and self._lookahead_samples:
                self._held = event
            else:
                out.append(event)
        if self._held is not None and (
            self._finished or self._buffer.end >= self._held.end + self._lookahead_samples or self._pause_was_silence()
        ):
            out.append(self._with_after(self._held))
            self._held = None
        return out

    def _pause_was_silence(self) -> bool:
        """A segment closed at a long segment's short pause, and the pause went on to silence_ms
        with no speech since: the speaker stopped, so its final need not wait for the look-ahead."""
        held, endpointer = self._held, self._endpointer
        if held is None or held.reason != "pause" or endpointer.in_segment or endpointer.onset_pending:
            return False
        rest_ms = self.settings.endpoint.silence_ms - self.settings.endpoint.long_silence_ms  # silence after the close
        return endpointer.frames_seen * FRAME_SAMPLES >= held.end + rest_ms * SAMPLE_RATE // 1000

    def _with_after(self, event: SegmentClosed) -> SegmentClosed:
        end = min(self._buffer.end, event.end + self._lookahead_samples)
        return dataclasses.replace(event, after=self._buffer.read(event.end, end))

    def _oldest_needed_sample(self) -> int:
        """Audio before this will never be read again: not by the open segment's partials and
        final, not by the pre-roll of a segment that may still open, not by FSMN's warm-up."""
        needed = self._oldest_needed_by_endpointer()
        return needed if self._held is None else min(needed, self._held.end)  # its look-ahead is still to be read

    def _oldest_needed_by_endpointer(self) -> int:
        segment = self._endpointer.open_segment
        if segment is not None:
            return max(0, segment.start * FRAME_SAMPLES - self._context_samples)
        run_start = self._endpointer.onset_start
        earliest_speech = run_start if run_start is not None else self._endpointer.frames_seen
        preroll = self.settings.endpoint.preroll_ms // FRAME_MS
        lookback = max(preroll + self._context_samples // FRAME_SAMPLES, FSMN_WARMUP_FRAMES)
        return max(0, earliest_speech - lookback) * FRAME_SAMPLES

    def _close_on_lookahead_silence(self) -> list[Event]:
        """Step the frames still waiting for FSMN's look-ahead as silence when that completes the
        silence rule and every one of them is quiet or non-speech to webrtcvad."""
        needed = self._endpointer.silence_frames_to_close
        if needed is None or needed > min(FSMN_LOOKAHEAD_FRAMES, len(self._pending)):
            return []
        waiting = [self._pending[i] for i in range(needed)]
        if any(webrtc and self._gate.passes(level) for level, webrtc in waiting):
            return []
        return self._silence_ahead_of_fsmn(needed)

    def feed(self, pcm: bytes, scorer: SpeechScorer) -> list[Event]:
        events = self.push(pcm)
        work = self.take_work()
        if work is None:
            return events
        if not work.needed:
            return events + self.apply(None)
        return events + self.apply(scorer.score([(work.state, work.samples)])[0])

    def finish(self) -> list[Event]:
        """End of stream: every open segment is closed with all audio received so far."""
        if self._finished:
            return []
        self._finished = True
        tail = self._resampler.flush()
        if len(tail):
            self._buffer.append(to_int16(tail))
        # Frames still waiting for FSMN (its look-ahead) are kept in the closing segment; the last
        # of them loud enough to pass the gate bounds where speech may have ended.
        loud = [i for i, (level, _) in enumerate(self._pending) if self._gate.passes(level)]
        tail_speech_end = (self._endpointer.frames_seen + loud[-1] + 1) * FRAME_SAMPLES if loud else 0
        return self._release_held(
            [self._to_event(d, self._buffer.end, tail_speech_end) for d in self._endpointer.finish()]
        )

    def _to_event(self, decision: Opened | Closed, end_sample: int | None = None, tail_speech_end: int = 0) -> Event:
        if isinstance(decision, Opened):
            start = self._clamp(decision.start * FRAME_SAMPLES)
            self._last_partial_end = start
            return SpeechStarted(decision.segment_id, start, decision.speech_start * FRAME_SAMPLES)
        start = self._clamp(decision.start * FRAME_SAMPLES)
        end = end_sample if end_sample is not None else decision.end * FRAME_SAMPLES
        speech_end = decision.speech_end * FRAME_SAMPLES
        if decision.reason == "end_of_stream":
            speech_end = min(end, max(speech_end, tail_speech_end))
        follows_cut = start == self._last_cut
        if decision.reason in CUT_REASONS:
            self._last_cut = end
        return SegmentClosed(
            segment_id=decision.segment_id,
            start=start,
            end=end,
            speech_start=decision.speech_start * FRAME_SAMPLES,
            speech_end=speech_end,
            reason=decision.reason,
            audio=self._buffer.read(start, end),
            context=self._context_before(start, end, follows_cut),
            follows_cut=follows_cut,
        )

    def _context_before(self, start: int, end: int, follows_cut: bool) -> Audio:
        """Up to context_s of the audio before `start` that is still held: for a segment up to
        `context_max_segment_s` long, or one that follows a cut (its first word may have begun
        before it). Longer segments carry their own context; heard after the stream's earlier
        audio, Whisper skipped words inside them (measured on the phone call: "we'll come back")."""
        limit = self._context_max_samples
        if not follows_cut and (self.settings.context_only_after_cuts or (limit and end - start > limit)):
            return self._buffer.read(start, start)
        return self._buffer.read(max(self._buffer.start, start - self._context_samples), start)

    def _clamp(self, sample: int) -> int:
        return max(sample, self._buffer.start)

    def _maybe_partial(self) -> list[Event]:
        segment = self._endpointer.open_segment
        if segment is None or self._partial_samples <= 0:
            return []
        end = self._endpointer.frames_seen * FRAME_SAMPLES
        if end - self._last_partial_end < self._partial_samples:
            return []
        if self._endpointer.last_speech_end * FRAME_SAMPLES <= self._last_partial_end:
            return []  # nothing new was said since the last partial (a pause: the final is near)
        self._last_partial_end = end
        start = self._clamp(segment.start * FRAME_SAMPLES)
        speech_start = segment.speech_start * FRAME_SAMPLES
        audio = self._buffer.read(start, end)
        context = self._context_before(start, end, start == self._last_cut)
        return [PartialDue(segment.segment_id, start, end, speech_start, audio, context)]

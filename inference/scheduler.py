"""Which decode requests run next: lanes, priorities, fair share and drop rules (pure: no asyncio).

Requests go in with `add()`, batches come out of `take_batch()`. Live work (streams paced in real
time) comes first, lane by lane: finals, then streaming steps (one chunk per stream per batch, in
order, never dropped: the model's cache depends on every chunk), then partial re-decodes (only the
newest per stream: a newer partial or the segment's final makes an older one stale). Background work
(file jobs, the OpenAI endpoint, streams sent faster than real time) runs only while no live request
waits, and is shared fairly: each batch serves one owner (a token or an address), in turn, the owner
served longest ago first. A batch never mixes engines for decodes (steps always use the live engine).

A model call cannot be interrupted, so a live final that closes while a background decode runs waits
for it (on a CPU about a second of Whisper). With `hold_s`, background work does not start while a
live stream is speaking (`speech_started` until that segment's final comes): it runs in the pauses,
and after waiting `hold_s` it gets one batch anyway, so it is slowed by live speech, never starved.

The executor owns futures, loops and threads; this module only decides order, and hands back the
requests it drops so the executor can answer them.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Lane(enum.IntEnum):
    """Priority order: a lower value is served first."""

    FINAL = 0  # a closed segment of a live stream: never dropped
    STEP = 1  # a chunk for a live stream's streaming model: in order per stream, never dropped
    PARTIAL = 2  # a re-decode of a live stream's open segment: only the newest per stream
    BACKGROUND = 3  # files, the OpenAI endpoint, streams sent faster than real time: fair share per owner


class Kind(enum.Enum):
    """What a request is (its drop rules), whichever lane it waits in."""

    FINAL = "final"
    STEP = "step"
    PARTIAL = "partial"


@dataclass(frozen=True)
class Source:
    """Who asks. `live`: a stream paced in real time (a person waits for its captions now); else the
    request is background work, shared fairly between `owner`s (a token digest or an address)."""

    owner: Hashable = None
    live: bool = True


LIVE = Source()
JOBS = Source("jobs", live=False)  # file jobs that name no owner of their own


def fair_share_owner(token_owner: str | None, address: str | None) -> str:
    """Whose share background work counts against: the token's owner when callers have tokens
    (None: auth off, where every caller is the same anonymous one), else the caller's address."""
    return f"token:{token_owner}" if token_owner is not None else f"address:{address or '?'}"


@dataclass(eq=False)  # identity, not field equality: requests carry numpy audio in `item`
class Request:
    kind: Kind
    stream: Hashable  # partials supersede per stream; steps run in order per stream
    segment: int
    engine: str
    source: Source = LIVE
    submitted: float = 0.0
    final_step: bool = False  # a streaming step that flushes its segment: never dropped
    item: Any = None  # the executor's own record (future, audio, options)
    lane: Lane = field(init=False)

    def __post_init__(self) -> None:
        if not self.source.live:
            self.lane = Lane.BACKGROUND
        else:
            self.lane = {Kind.FINAL: Lane.FINAL, Kind.STEP: Lane.STEP, Kind.PARTIAL: Lane.PARTIAL}[self.kind]


class Scheduler:
    def __init__(
        self,
        max_batch_size: int,
        live_engine: str,
        background_batch_size: int | None = None,
        hold_s: float = 0.0,
    ) -> None:
        """`hold_s`: most time background work waits for live speech to pause (0: it never waits)."""
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if hold_s < 0:
            raise ValueError(f"hold_s must be at least 0, got {hold_s}")
        self.max_batch_size = max_batch_size
        self.background_batch_size = min(background_batch_size or max_batch_size, max_batch_size)
        self.live_engine = live_engine
        self._finals: deque[Request] = deque()
        self._steps: dict[Hashable, deque[Request]] = {}  # stream -> its live streaming chunks, in order
        self._partials: dict[Hashable, Request] = {}  # stream -> newest pending partial (any lane)
        self._background: dict[Hashable, deque[Request]] = {}  # owner -> its requests, oldest first
        self._served: dict[Hashable, int] = {}  # owner -> when it was last served (batch counter)
        self._batches = 0
        self.hold_s = hold_s
        self._speaking: dict[Hashable, int] = {}  # live stream -> the segment it is speaking (its final follows)
        self._held_since: float | None = None  # background work waiting for live speech to pause, since

    # --- in ------------------------------------------------------------------------------------
    def add(self, request: Request) -> list[Request]:
        """Queue a request; returns the requests it made stale (to be answered with None)."""
        if request.lane is not Lane.BACKGROUND and request.kind is not Kind.STEP and request.engine != self.live_engine:
            raise ValueError(f"live requests use the live engine {self.live_engine!r}, not {request.engine!r}")
        dropped: list[Request] = []
        if request.kind is Kind.FINAL or request.final_step:
            self._spoken(request.stream, request.segment)
        if request.kind is Kind.FINAL:
            dropped += self.drop_stale(request.stream, request.segment)
        elif request.kind is Kind.PARTIAL:
            dropped += self._drop_partial(request.stream)
            self._partials[request.stream] = request
        if request.lane is Lane.FINAL:
            self._finals.append(request)
        elif request.lane is Lane.STEP:
            self._steps.setdefault(request.stream, deque()).append(request)
        elif request.lane is Lane.BACKGROUND:
            self._background.setdefault(request.source.owner, deque()).append(request)
        return dropped

    def drop_stale(self, stream: Hashable, up_to_segment: int | None = None) -> list[Request]:
        """The stream's pending partial and streaming chunks of segments up to `up_to_segment` (all,
        if None), except chunks that flush a segment: a final for them is on its way or came."""
        dropped = self._drop_partial(stream, up_to_segment)
        stale = [
            r
            for r in self._steps_of(stream)
            if not r.final_step and (up_to_segment is None or r.segment <= up_to_segment)
        ]
        self._remove(stale)
        return dropped + stale

    def speech_started(self, stream: Hashable, segment: int) -> None:
        """A live stream began speaking `segment`: its final will follow, and a background decode
        started meanwhile would delay it. Background work waits until that final is added."""
        self._speaking[stream] = segment

    def forget_stream(self, stream: Hashable) -> list[Request]:
        """The stream ended: it wants no more partials; streaming chunks go too unless one of them
        flushes a segment (that segment's final depends on every chunk before it)."""
        self._speaking.pop(stream, None)
        if any(r.final_step for r in self._steps_of(stream)):
            return self._drop_partial(stream)
        return self.drop_stale(stream)

    def demote(self, stream: Hashable, source: Source) -> None:
        """The stream turned out not to be live (sent faster than real time): what it already has
        queued in the live lanes becomes background work of `source` too, in submission order,
        instead of going ahead of the live streams' finals."""
        assert not source.live
        self._speaking.pop(stream, None)  # nobody waits for its finals now
        queued = [r for r in self._finals if r.stream == stream] + list(self._steps.get(stream, ()))
        partial = self._partials.get(stream)
        if partial is not None and partial.lane is not Lane.BACKGROUND:
            queued.append(partial)
        self._remove(queued)
        for request in sorted(queued, key=lambda r: r.submitted):
            request.source, request.lane = source, Lane.BACKGROUND
            if request.kind is Kind.PARTIAL:
                self._partials[stream] = request
            self._background.setdefault(source.owner, deque()).append(request)

    def cancel(self, stream: Hashable) -> list[Request]:
        """The stream's queued background requests: whoever asked for them is gone (an HTTP client
        that disconnected, a fast stream's closed socket). Live work is kept: a vanished live
        client's finals still reach the history. Returns them, to be answered."""
        gone = [r for r in self._background_of(stream)]
        self._remove(gone)
        return gone

    # --- out -----------------------------------------------------------------------------------
    def take_batch(self, now: float = 0.0) -> list[Request]:
        """The next batch: live work by lane, else one owner's background work (fair turn), unless
        live speech holds it (see background_held; `now` on the clock of `hold_s`)."""
        batch: list[Request] = []
        limit = self.max_batch_size
        while self._finals and len(batch) < limit:
            request = self._finals.popleft()
            self._forget_partial(request)
            batch.append(request)
        # One chunk per stream: a stream's next chunk needs the cache this one leaves behind.
        for stream in sorted(self._steps, key=lambda s: self._steps[s][0].submitted):
            if len(batch) >= limit:
                break
            queue = self._steps[stream]
            batch.append(queue.popleft())
            if not queue:
                del self._steps[stream]
        for stream, request in list(self._partials.items()):
            if len(batch) >= limit:
                break
            if request.lane is Lane.PARTIAL:
                del self._partials[stream]
                batch.append(request)
        if not batch and not self.background_held(now):
            batch = self._take_background()
        return batch

    def background_held(self, now: float) -> bool:
        """Background work waits: a live stream is speaking and the wait has not reached hold_s."""
        if not self._background or not self._speaking or not self.hold_s:
            self._held_since = None
            return False
        if self._held_since is None:
            self._held_since = now
        return now < self._held_since + self.hold_s  # (the sum hold_ends_at gives: no float gap)

    def ready(self, now: float) -> bool:
        """Whether take_batch(now) has something to give."""
        return bool(self.live_depth) or bool(self._background) and not self.background_held(now)

    def hold_ends_at(self) -> float | None:
        """When background work held by live speech gets its turn anyway (None: nothing is held)."""
        return None if self._held_since is None else self._held_since + self.hold_s

    def _take_background(self) -> list[Request]:
        if not self._background:
            return []
        # The owner served longest ago (never served: first), ties by their oldest request.
        owner = min(self._background, key=lambda o: (self._served.get(o, -1), self._background[o][0].submitted))
        queue = self._background[owner]
        self._held_since = None  # (a turn given: the next wait starts from now)
        self._batches += 1
        self._served[owner] = self._batches
        if len(self._served) > 2 * len(self._background) + 64:  # owners long gone: forget them
            self._served = {o: n for o, n in self._served.items() if o in self._background}
        batch: list[Request] = []
        skipped: list[Request] = []
        engine = next((r.engine for r in queue if r.kind is not Kind.STEP), self.live_engine)
        steps_taken: set[Hashable] = set()
        while queue and len(batch) < self.background_batch_size:
            request = queue.popleft()
            if request.kind is Kind.STEP:
                ok = request.stream not in steps_taken and not any(r.stream == request.stream for r in skipped)
                steps_taken.add(request.stream)
            else:
                ok = request.engine == engine
            if ok:
                self._forget_partial(request)
                batch.append(request)
            else:
                skipped.append(request)
        queue.extendleft(reversed(skipped))  # other engines' requests (and later chunks) keep their places
        if not queue:
            del self._background[owner]
        return batch

    # --- state ---------------------------------------------------------------------------------
    def pending(self) -> Iterator[Request]:
        yield from self._finals
        for queue in self._steps.values():
            yield from queue
        yield from (r for r in self._partials.values() if r.lane is Lane.PARTIAL)
        for queue in self._background.values():
            yield from queue

    def drain(self) -> list[Request]:
        """Everything queued, removed (the executor is closing)."""
        everything = list(self.pending())
        self._finals.clear()
        self._steps.clear()
        self._partials.clear()
        self._background.clear()
        return everything

    @property
    def live_depth(self) -> int:
        """Live requests waiting (finals, streaming chunks, partials)."""
        partials = sum(r.lane is Lane.PARTIAL for r in self._partials.values())
        return len(self._finals) + sum(len(q) for q in self._steps.values()) + partials

    @property
    def speakers(self) -> int:
        """Live streams speaking now (each holds background work until its final comes)."""
        return len(self._speaking)

    def background_queued(self, stream: Hashable) -> int:
        """The stream's background requests waiting."""
        return len(self._background_of(stream))

    @property
    def background_depth(self) -> int:
        return sum(len(q) for q in self._background.values())

    def __bool__(self) -> bool:
        return bool(self._finals or self._steps or self._partials or self._background)

    def ready_size(self) -> int:
        """How many requests the next batch could hold now (to decide whether waiting fills it more)."""
        if self.live_depth:
            return min(self.live_depth, self.max_batch_size)
        return min(self.background_depth, self.background_batch_size)

    @property
    def batch_limit(self) -> int:
        return self.max_batch_size if self.live_depth else self.background_batch_size

    def oldest_submitted(self) -> float | None:
        """When the oldest request that the next batch would serve was submitted (live first)."""
        live = [self._finals[0]] if self._finals else []
        live += [q[0] for q in self._steps.values()]
        live += [r for r in self._partials.values() if r.lane is Lane.PARTIAL]
        if live:
            return min(r.submitted for r in live)
        return min((q[0].submitted for q in self._background.values()), default=None)

    def oldest_final_submitted(self) -> float | None:
        return self._finals[0].submitted if self._finals else None

    # --- internals -----------------------------------------------------------------------------
    def _steps_of(self, stream: Hashable) -> list[Request]:
        return list(self._steps.get(stream, ())) + [r for r in self._background_of(stream) if r.kind is Kind.STEP]

    def _background_of(self, stream: Hashable) -> list[Request]:
        return [r for queue in self._background.values() for r in queue if r.stream == stream]

    def _spoken(self, stream: Hashable, segment: int) -> None:
        """The final of `segment` (or a later one) is here: the stream no longer holds background work."""
        if self._speaking.get(stream, segment + 1) <= segment:
            del self._speaking[stream]

    def _drop_partial(self, stream: Hashable, up_to_segment: int | None = None) -> list[Request]:
        pending = self._partials.get(stream)
        if pending is None or (up_to_segment is not None and pending.segment > up_to_segment):
            return []
        self._remove([pending])
        return [pending]

    def _forget_partial(self, request: Request) -> None:
        if request.kind is Kind.PARTIAL and self._partials.get(request.stream) is request:
            del self._partials[request.stream]

    def _remove(self, requests: list[Request]) -> None:
        for request in requests:
            self._forget_partial(request)
            if request.lane is Lane.FINAL:
                self._finals.remove(request)
            elif request.lane is Lane.STEP:
                queue = self._steps[request.stream]
                queue.remove(request)
                if not queue:
                    del self._steps[request.stream]
            elif request.lane is Lane.BACKGROUND:
                queue = self._background[request.source.owner]
                queue.remove(request)
                if not queue:
                    del self._background[request.source.owner]

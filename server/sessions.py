"""Caption sessions that outlive one connection: finals kept for resume and replay, live copies of
every caption to subscribers (overlays, other displays).

A session is named by the client (or by the server when it does not say). Segment ids and times
continue across the connections of one session, so a client that reconnects with `resume_after`
gets exactly the finals it missed - including the one the server finalized after the old socket
vanished - and nothing twice.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.outbox import Outbox

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def new_session_id() -> str:
    return secrets.token_urlsafe(9)  # 12 URL-safe characters


@dataclass
class CaptionSession:
    session_id: str
    finals: deque[dict[str, Any]]
    next_segment_id: int = 0  # the first segment id of the session's next stream
    audio_ms: int = 0  # the session's timeline: audio time of its finished streams
    owner: Any = None  # the connection streaming into it now, if any
    subscribers: set[Outbox] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)

    def finals_after(self, segment_id: int) -> list[dict[str, Any]]:
        return [{**final, "replayed": True} for final in self.finals if final["segment_id"] > segment_id]


# Idle sessions are looked for at most this often. Scanning on every get() cost O(sessions) per
# new connection: a reconnect storm of N clients with thousands of kept sessions scanned N times.
SWEEP_INTERVAL_S = 1.0


class SessionHub:
    def __init__(
        self,
        keep_s: float,
        max_finals: int,
        subscriber_partials: int,
        subscriber_backlog: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keep_s = keep_s
        self._clock = clock
        self._next_sweep = 0.0
        self.max_finals = max_finals
        self._subscriber_partials = subscriber_partials
        self._subscriber_backlog = subscriber_backlog
        self._sessions: dict[str, CaptionSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> CaptionSession:
        """The session of this id, created empty if unknown (or forgotten after keep_s idle)."""
        self._forget_idle()
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = CaptionSession(session_id, deque(maxlen=self.max_finals))
        session.last_used = self._clock()
        return session

    def publish(self, session: CaptionSession, message: dict[str, Any]) -> None:
        """A caption reply of the session's stream: stored if final, copied to every subscriber."""
        session.last_used = self._clock()
        kind = message.get("type")
        if kind == "final":
            session.finals.append(message)
        for outbox in list(session.subscribers):
            outbox.put(message, droppable=kind == "partial")
            if outbox.overflowing:  # a display that stopped reading: cut it loose, keep the rest
                outbox.close()
                session.subscribers.discard(outbox)

    def subscribe(self, session_id: str) -> Outbox:
        """An outbox that first holds the session's stored finals (replayed), then live captions."""
        session = self.get(session_id)
        outbox = Outbox(self._subscriber_partials, self._subscriber_backlog + self.max_finals)
        for final in session.finals_after(-1):
            outbox.put(final)
        session.subscribers.add(outbox)
        return outbox

    def unsubscribe(self, session_id: str, outbox: Outbox) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.subscribers.discard(outbox)
            session.last_used = self._clock()

    def close_subscribers(self) -> None:
        """Server stopping: subscribers get what is queued, then their sockets close."""
        for session in self._sessions.values():
            for outbox in session.subscribers:
                outbox.close()

    def _forget_idle(self) -> None:
        """Sessions with no stream and no subscriber, idle longer than keep_s, are forgotten (at
        most SWEEP_INTERVAL_S late)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(SWEEP_INTERVAL_S, self.keep_s)
        cutoff = now - self.keep_s
        for session_id, session in list(self._sessions.items()):
            if session.owner is None and not session.subscribers and session.last_used < cutoff:
                del self._sessions[session_id]

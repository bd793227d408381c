"""Caption sessions that outlive one connection: finals kept for resume and replay, live copies of
every caption to subscribers (overlays, other displays).

A session is named by the client (or by the server when it does not say). Segment ids and times
continue across the connections of one session, so a client that reconnects with `resume_after`
gets exactly the finals it missed - including the one the server finalized after the old socket
vanished - and nothing twice.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from server.auth import ANONYMOUS, Principal
from server.outbox import Outbox


def new_session_id() -> str:
    return secrets.token_urlsafe(9)  # 12 URL-safe characters


_client_numbers = itertools.count(1)


@dataclass(frozen=True)
class SessionClient:
    """Who opens or follows a session: the token behind it, its address, and one number per
    connection (sessions are counted per connection, per token and per address).
    `may_name_sessions` is false for browser pages of a foreign origin with auth off: they may
    stream into a fresh session of their own but not join, resume or follow a named one."""

    principal: Principal = ANONYMOUS
    address: str = ""
    may_name_sessions: bool = True
    number: int = field(default_factory=lambda: next(_client_numbers))


class SessionRefused(Exception):
    """A session may not be opened or followed; `code` and `message` go to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class SessionLimits:
    """Most sessions kept at once (0 = no limit): in total, and per creating connection, token and
    address. A creator at its limit forgets its own least recently used idle session to make room;
    the server at its total forgets the least recently used idle session. Sessions being streamed
    into or followed are never forgotten: with all of them busy, a new one is refused."""

    total: int = 0
    per_connection: int = 0
    per_token: int = 0
    per_address: int = 0


@dataclass
class CaptionSession:
    session_id: str
    finals: deque[dict[str, Any]]
    next_segment_id: int = 0  # the first segment id of the session's next stream
    audio_ms: int = 0  # the session's timeline: audio time of its finished streams
    owner: Any = None  # the connection streaming into it now, if any
    subscribers: set[Outbox] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    owner_id: str | None = None  # the token (Principal.owner_id) it belongs to; None = not yet claimed
    groups: tuple[tuple[str, Any], ...] = ()  # the creator's counting groups (connection, token, address)

    @property
    def busy(self) -> bool:
        return self.owner is not None or bool(self.subscribers)

    def finals_after(self, segment_id: int) -> list[dict[str, Any]]:
        return [{**final, "replayed": True} for final in self.finals if final["segment_id"] > segment_id]


class StreamOwner(Protocol):
    """The connection streaming into a session: who it is, and how it lets another take over."""

    client: SessionClient

    async def hand_over(self) -> None: ...


class SessionStore(Protocol):
    """Where caption sessions live: in this process (SessionHub, the default) or shared by every
    front end (server.redis_sessions.RedisSessions, with [cluster] redis_url). The two awaits are
    the only places a shared store may wait for the network; everything else is synchronous."""

    async def join(self, session_id: str | None, client: SessionClient) -> CaptionSession:
        """The session a new stream of `client` feeds, current on this front end (a stream into it
        elsewhere handed over first); SessionRefused if it may not."""
        ...

    async def follow(self, session_id: str, client: SessionClient | None = None) -> Outbox:
        """A display's outbox: the session's stored finals (replayed), then its live captions."""
        ...

    def publish(self, session: CaptionSession, message: dict[str, Any]) -> None: ...

    def end_stream(self, session: CaptionSession, owner: StreamOwner, next_segment_id: int, audio_ms: int) -> None:
        """`owner`'s stream is over and its finals are out: the next stream continues after them."""
        ...

    def unsubscribe(self, session_id: str, outbox: Outbox) -> None: ...

    def close_subscribers(self) -> None: ...

    async def close(self) -> None: ...

    def health(self) -> dict[str, Any] | None:
        """The shared store's state for /healthz (None: sessions are in this process only)."""
        ...


# Idle sessions are looked for at most this often (each look costs O(sessions forgotten)).
SWEEP_INTERVAL_S = 1.0


class SessionHub:
    """Sessions in least-recently-used order, so forgetting idle ones and making room costs
    O(1) per session forgotten, never a scan of all of them."""

    def __init__(
        self,
        keep_s: float,
        max_finals: int,
        subscriber_partials: int,
        subscriber_backlog: int,
        clock: Callable[[], float] = time.monotonic,
        limits: SessionLimits = SessionLimits(),
    ) -> None:
        self.keep_s = keep_s
        self._clock = clock
        self._next_sweep = 0.0
        self.max_finals = max_finals
        self.limits = limits
        self._subscriber_partials = subscriber_partials
        self._subscriber_backlog = subscriber_backlog
        self._sessions: OrderedDict[str, CaptionSession] = OrderedDict()  # least recently used first
        self._groups: dict[tuple[str, Any], OrderedDict[str, None]] = {}  # the same order, per creator

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str, client: SessionClient | None = None) -> CaptionSession:
        """The session of this id, created empty if unknown (or forgotten after keep_s idle).
        With a client: SessionRefused if it may not use that session or may not create another."""
        self._forget_idle()
        session = self._sessions.get(session_id)
        if session is None:
            session = self._create(session_id, client)
        elif client is not None:
            self._check_access(session, client)
        self.touch(session)
        return session

    def open_stream(self, session_id: str | None, client: SessionClient) -> CaptionSession:
        """The session a new stream of `client` feeds: the named one (joined or taken over), or a
        fresh one with a generated id."""
        if session_id is not None and not client.may_name_sessions:
            raise SessionRefused(
                "forbidden_origin",
                "a page of another origin may stream into a new session but not join a named one "
                "(auth.allowed_origins)",
            )
        return self.get(session_id or new_session_id(), client)

    # --- SessionStore: in this process, nothing to wait for ----------------------------------
    async def join(self, session_id: str | None, client: SessionClient) -> CaptionSession:
        return self.open_stream(session_id, client)

    async def follow(self, session_id: str, client: SessionClient | None = None) -> Outbox:
        return self.subscribe(session_id, client)

    def end_stream(self, session: CaptionSession, owner: StreamOwner, next_segment_id: int, audio_ms: int) -> None:
        session.next_segment_id = next_segment_id
        session.audio_ms = audio_ms
        if session.owner is owner:
            session.owner = None

    async def close(self) -> None:
        return None

    def health(self) -> dict[str, Any] | None:
        return None

    # --- what a shared store brings in from other front ends ---------------------------------
    def find(self, session_id: str) -> CaptionSession | None:
        """The session if this process holds it (not created, not counted as used)."""
        return self._sessions.get(session_id)

    def adopt(
        self,
        session_id: str,
        finals: list[dict[str, Any]],
        next_segment_id: int,
        audio_ms: int,
        owner_id: str | None,
        client: SessionClient | None = None,
    ) -> None:
        """Another front end's copy of a session is merged into this one's (not while streamed into
        here): finals by segment id, so those that arrived live after that copy was read, or that a
        Redis restarted empty no longer holds, are kept. The next segment id and time continue
        after the last final even if the copy's counters were never updated (the front end that
        wrote them died mid-stream). A session new here counts against `client`'s
        limits, as one it creates; whether it may use it is checked by join/follow after this."""
        session = self._sessions.get(session_id)
        if session is None:
            session = self._create(session_id, client)
        elif session.owner is not None:
            return
        merged = {final["segment_id"]: final for final in session.finals}
        merged.update((final["segment_id"], final) for final in finals)
        session.finals = deque((merged[i] for i in sorted(merged)), maxlen=self.max_finals)
        if session.finals:
            final = session.finals[-1]
            next_segment_id = max(next_segment_id, final["segment_id"] + 1)
            audio_ms = max(audio_ms, final.get("end_ms", 0))
        session.next_segment_id = max(session.next_segment_id, next_segment_id)
        session.audio_ms = max(session.audio_ms, audio_ms)
        if owner_id is not None:  # None: unclaimed there, or a Redis restarted empty: what is known here stands
            session.owner_id = owner_id

    def deliver(self, session_id: str, message: dict[str, Any]) -> None:
        """A caption of this session published on another front end: to the followers here, once
        (a final already held is not shown again)."""
        session = self._sessions.get(session_id)
        if session is None:
            return
        held = session.finals[-1]["segment_id"] if session.finals else -1
        if message.get("type") == "final" and message["segment_id"] <= held:
            return
        self.publish(session, message)

    def touch(self, session: CaptionSession) -> None:
        session.last_used = self._clock()
        if self._sessions.get(session.session_id) is session:
            self._sessions.move_to_end(session.session_id)
            for group in session.groups:
                self._groups[group].move_to_end(session.session_id)

    def publish(self, session: CaptionSession, message: dict[str, Any]) -> None:
        """A caption reply of the session's stream: stored if final, copied to every subscriber."""
        self.touch(session)
        kind = message.get("type")
        if kind == "final":
            session.finals.append(message)
        for outbox in list(session.subscribers):
            outbox.put(message, droppable=kind == "partial")
            if outbox.overflowing:  # a display that stopped reading: cut it loose, keep the rest
                outbox.close()
                session.subscribers.discard(outbox)

    def subscribe(self, session_id: str, client: SessionClient | None = None) -> Outbox:
        """An outbox that first holds the session's stored finals (replayed), then live captions."""
        if client is not None and not client.may_name_sessions:
            raise SessionRefused("forbidden_origin", "pages of another origin may not follow sessions")
        session = self.get(session_id, client)
        outbox = Outbox(self._subscriber_partials, self._subscriber_backlog + self.max_finals)
        for final in session.finals_after(-1):
            outbox.put(final)
        session.subscribers.add(outbox)
        return outbox

    def unsubscribe(self, session_id: str, outbox: Outbox) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.subscribers.discard(outbox)
            self.touch(session)

    def close_subscribers(self) -> None:
        """Server stopping: subscribers get what is queued, then their sockets close."""
        for session in self._sessions.values():
            for outbox in session.subscribers:
                outbox.close()

    # --- ownership and limits ----------------------------------------------------------------
    @staticmethod
    def _check_access(session: CaptionSession, client: SessionClient) -> None:
        principal = client.principal
        if session.owner_id is None and not principal.admin:
            session.owner_id = principal.owner_id  # created by an admin's display: the first user claims it
        if not principal.may_access(session.owner_id):
            raise SessionRefused("forbidden", f"session {session.session_id} belongs to another token")

    def _create(self, session_id: str, client: SessionClient | None) -> CaptionSession:
        groups: tuple[tuple[str, Any], ...] = ()
        owner_id = None
        if client is not None:
            owner_id = None if client.principal.admin else client.principal.owner_id
            limits = self.limits
            auth_on = client.principal.owner_id != ANONYMOUS.owner_id
            wanted = (
                (("connection", client.number), limits.per_connection, "server.max_sessions_per_connection"),
                # with auth off every caller is the same "anonymous" token: counted per address only
                (("token", client.principal.owner_id), limits.per_token * auth_on, "server.max_sessions_per_token"),
                (("address", client.address), limits.per_address, "server.max_sessions_per_address"),
            )
            for group, limit, setting in wanted:
                if limit and len(self._groups.get(group, ())) >= limit:
                    if not self._forget_least_recent(self._groups[group]):
                        raise SessionRefused("busy", f"too many sessions in use ({setting} = {limit})")
            groups = tuple(group for group, limit, _ in wanted if limit)
        if self.limits.total and len(self._sessions) >= self.limits.total:
            if not self._forget_least_recent(self._sessions):
                raise SessionRefused(
                    "busy", f"server busy: all sessions in use (server.max_sessions = {self.limits.total})"
                )
        session = CaptionSession(session_id, deque(maxlen=self.max_finals), owner_id=owner_id, groups=groups)
        self._sessions[session_id] = session
        for group in groups:
            self._groups.setdefault(group, OrderedDict())[session_id] = None
        return session

    def _forget_least_recent(self, order: OrderedDict) -> bool:
        """Forget the least recently used idle session in `order`; False if every one is busy.
        Busy ones met on the way are in use now: they move to the back (O(1) each, once)."""
        for _ in range(len(order)):
            session = self._sessions[next(iter(order))]
            if not session.busy:
                self._forget(session)
                return True
            self.touch(session)
        return False

    def _forget(self, session: CaptionSession) -> None:
        del self._sessions[session.session_id]
        for group in session.groups:
            members = self._groups[group]
            del members[session.session_id]
            if not members:
                del self._groups[group]

    def _forget_idle(self) -> None:
        """Sessions with no stream and no subscriber, idle longer than keep_s, are forgotten (at
        most SWEEP_INTERVAL_S late). Oldest first, stopping at the first one still fresh."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + min(SWEEP_INTERVAL_S, self.keep_s)
        cutoff = now - self.keep_s
        while self._sessions:
            session = next(iter(self._sessions.values()))
            if session.last_used >= cutoff:
                break
            if session.busy:
                self.touch(session)  # in use: counts as used now
            else:
                self._forget(session)

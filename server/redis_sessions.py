"""Caption sessions shared by every front end through Redis ([cluster] redis_url).

This front end's SessionHub stays the fast path: streams, replies and followers here never wait
for Redis. Redis holds what another front end needs to carry a session on, and carries captions
between front ends:

  livecaption:session:{id}          hash: owner_id (token), node + conn (who streams into it now),
                                    next_segment_id, audio_ms (where its next stream continues)
  livecaption:session:{id}:finals   sorted set of finals (JSON) by segment id; the last
                                    server.session_max_finals kept, for resume and replay
  livecaption:captions:{id}         channel: every caption of the session, as {"node", "message"}
  livecaption:node:{node}           channel: hand-over requests to a front end, and their answers
  livecaption:alive:{node}          key, renewed every node_ttl_s / 3: that front end is running

Both keys of a session expire server.session_keep_s after their last write (renewed while a stream
feeds the session). A stream that opens a session another front end streams into asks that front
end to hand it over (its stream ends, finals stored, its socket closed with 4001, as a takeover on
one front end) and waits for the answer, up to server.disconnect_flush_s + node_ttl_s, or not at
all when that front end is no longer alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from server.outbox import Outbox
from server.redis_link import RedisLink, RedisUnavailable
from server.sessions import CaptionSession, SessionClient, SessionHub, StreamOwner

log = logging.getLogger(__name__)

PREFIX = "livecaption"
CATCH_UP_RETRY_S = 0.5  # after an outage, reading back missed finals is retried this often
CLAIM_WAIT_S = 1.0  # a stream accepted here waits at most this long for its claim to be in Redis

# end_stream: the counters are written only while this front end's connection still holds the
# session (a front end that answered a hand-over too late must not undo the new owner's claim).
RELEASE = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] and redis.call('HGET', KEYS[1], 'conn') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'conn', '', 'next_segment_id', ARGV[3], 'audio_ms', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
"""


def state_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}"


def finals_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}:finals"


def captions_channel(session_id: str) -> str:
    return f"{PREFIX}:captions:{session_id}"


def node_channel(node: str) -> str:
    return f"{PREFIX}:node:{node}"


def alive_key(node: str) -> str:
    return f"{PREFIX}:alive:{node}"


def new_node_id() -> str:
    """Names this front end in Redis: readable in redis-cli, unique across restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class SharedState:
    """A session as Redis holds it."""

    finals: list[dict[str, Any]]
    owner_id: str | None
    node: str  # the front end that last opened a stream into it
    conn: str  # that front end's connection number while it streams; "" once the stream ended
    next_segment_id: int
    audio_ms: int

    @property
    def streaming_on(self) -> str | None:
        return self.node if self.conn else None


class RedisSessions:
    """SessionStore over a local SessionHub, shared with other front ends through Redis."""

    def __init__(
        self,
        hub: SessionHub,
        url: str,
        node_ttl_s: float,
        max_queued_writes: int,
        hand_over_timeout_s: float,
        node: str | None = None,
    ) -> None:
        self.hub = hub
        self.node = node or new_node_id()
        self.node_ttl_s = node_ttl_s
        self.hand_over_timeout_s = hand_over_timeout_s
        self.link = RedisLink(
            url, max_queued_writes, self._on_message, self._catch_up, channels=(node_channel(self.node),)
        )
        self._streaming: set[str] = set()  # sessions streamed into here: their keys' expiry is renewed
        self._requests: dict[str, asyncio.Future] = {}  # hand-overs asked of other front ends
        self._tasks: set[asyncio.Task] = set()
        self._heartbeat: asyncio.Task | None = None

    @property
    def keep_s(self) -> int:
        return max(1, math.ceil(self.hub.keep_s))

    async def start(self) -> None:
        """RedisUnavailable (naming cluster.redis_url) if Redis does not answer."""
        await self.link.start()
        self._beat()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="redis sessions heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for task in list(self._tasks):
            task.cancel()
        self.link.write(("DEL", alive_key(self.node)))  # no one waits for this front end's answers now
        await self.link.close()

    def health(self) -> dict[str, Any]:
        return {
            "redis": "ok" if self.link.healthy else "unreachable",
            "error": self.link.last_error,
            "node": self.node,
            "queued_writes": self.link.queued_writes,
            "dropped_writes": self.link.dropped_writes,
        }

    # --- SessionStore ------------------------------------------------------------------------
    async def join(self, session_id: str | None, client: SessionClient) -> CaptionSession:
        if session_id is None or not client.may_name_sessions:
            session = self.hub.open_stream(session_id, client)  # fresh, or refused there with the hub's reason
        else:
            state = await self._fetch(session_id)
            self._adopt(session_id, state, client)
            session = self.hub.open_stream(session_id, client)  # may it? (token, origin, limits)
            elsewhere = state.streaming_on if state is not None else None
            if elsewhere not in (None, self.node) and await self._hand_over(elsewhere, session_id):
                self._adopt(session_id, await self._fetch(session_id), client)
        self._streaming.add(session.session_id)
        key = state_key(session.session_id)
        claim = self.link.write(
            ("HSET", key, "node", self.node, "conn", str(client.number), "owner_id", session.owner_id or ""),
            ("EXPIRE", key, self.keep_s),
        )
        if self.link.healthy:
            # Another front end opening a stream into this session asks the one named here to hand
            # it over: once a stream is accepted, that name must be in Redis. Queued, a join there
            # a moment later read no owner, and both streamed into the session. Redis away: the
            # stream goes on at once (its claim lands when Redis is back).
            try:
                await asyncio.wait_for(self.link.flushed(claim), CLAIM_WAIT_S)
            except TimeoutError:
                log.warning("session %s: Redis took over %g s to record this stream", session.session_id, CLAIM_WAIT_S)
        return session

    async def follow(self, session_id: str, client: SessionClient | None = None) -> Outbox:
        if client is not None and not client.may_name_sessions:
            return self.hub.subscribe(session_id, client)  # refused there, with the hub's reason
        channel = captions_channel(session_id)
        await self.link.listen(channel)  # first: a final published while Redis is read is not missed
        try:
            state = await self._fetch(session_id)
            self._adopt(session_id, state, client)
            outbox = self.hub.subscribe(session_id, client)
        except BaseException:
            self.link.unlisten(channel)
            raise
        session = self.hub.find(session_id)
        owner_id = session.owner_id if session is not None else None
        if owner_id is not None and (state is None or state.owner_id is None):
            # the first token to follow an unclaimed session claims it, on every front end
            key = state_key(session_id)
            self.link.write(("HSETNX", key, "owner_id", owner_id), ("EXPIRE", key, self.keep_s))
        return outbox

    def unsubscribe(self, session_id: str, outbox: Outbox) -> None:
        self.hub.unsubscribe(session_id, outbox)
        self.link.unlisten(captions_channel(session_id))

    def publish(self, session: CaptionSession, message: dict[str, Any]) -> None:
        self.hub.publish(session, message)
        sid = session.session_id
        envelope = ("PUBLISH", captions_channel(sid), json.dumps({"node": self.node, "message": message}))
        kind = message.get("type")
        if kind == "final":
            key = finals_key(sid)
            self.link.write(
                ("ZADD", key, message["segment_id"], json.dumps(message)),
                ("ZREMRANGEBYRANK", key, 0, -self.hub.max_finals - 1),
                ("EXPIRE", key, self.keep_s),
                ("EXPIRE", state_key(sid), self.keep_s),
                envelope,
            )
        else:
            self.link.write(envelope, droppable=kind == "partial")

    def end_stream(self, session: CaptionSession, owner: StreamOwner, next_segment_id: int, audio_ms: int) -> None:
        self.hub.end_stream(session, owner, next_segment_id, audio_ms)
        if session.owner is None:
            self._streaming.discard(session.session_id)
        conn = str(owner.client.number)
        args = (self.node, conn, next_segment_id, audio_ms, self.keep_s)
        self.link.write(("EVAL", RELEASE, 1, state_key(session.session_id), *args))

    def close_subscribers(self) -> None:
        self.hub.close_subscribers()

    # --- Redis in, sessions out --------------------------------------------------------------
    async def _fetch(self, session_id: str) -> SharedState | None:
        """The session as Redis holds it; None if Redis has none, or is away (this front end then
        carries on with what it holds itself)."""
        try:
            fields, finals = await self.link.read(
                ("HGETALL", state_key(session_id)), ("ZRANGE", finals_key(session_id), 0, -1)
            )
        except RedisUnavailable as exc:
            log.warning("session %s: %s; going on with this front end's copy", session_id, exc)
            return None
        if not fields and not finals:
            return None
        fields = {key.decode(): value.decode() for key, value in fields.items()}
        return SharedState(
            finals=[json.loads(final) for final in finals],
            owner_id=fields.get("owner_id") or None,
            node=fields.get("node", ""),
            conn=fields.get("conn", ""),
            next_segment_id=int(fields.get("next_segment_id", 0)),
            audio_ms=int(fields.get("audio_ms", 0)),
        )

    def _adopt(self, session_id: str, state: SharedState | None, client: SessionClient | None) -> None:
        """Redis's copy replaces this front end's, unless this front end was the last to stream
        into it (its own copy is as new, or newer while writes wait for Redis)."""
        if state is None or (state.node == self.node and self.hub.find(session_id) is not None):
            return
        self.hub.adopt(session_id, state.finals, state.next_segment_id, state.audio_ms, state.owner_id, client=client)

    def _on_message(self, channel: str, data: bytes) -> None:
        envelope = json.loads(data)
        if channel == node_channel(self.node):
            self._on_request(envelope)
            return
        if envelope["node"] == self.node:
            return  # published here: the followers here had it from the hub
        session_id = channel.removeprefix(f"{PREFIX}:captions:")
        self.hub.deliver(session_id, envelope["message"])

    async def _catch_up(self) -> None:
        """Pub/sub was away: finals published meanwhile are read back for the followers here
        (until that works: the listener may be back before every pooled connection is)."""
        pending = list(self.link.listened)
        while pending:
            session_id = pending[0].removeprefix(f"{PREFIX}:captions:")
            try:
                (finals,) = await self.link.read(("ZRANGE", finals_key(session_id), 0, -1))
            except RedisUnavailable as exc:
                log.info("catching up on session %s: %s; trying again", session_id, exc)
                await asyncio.sleep(CATCH_UP_RETRY_S)
                continue
            for final in finals:
                self.hub.deliver(session_id, json.loads(final))
            pending.pop(0)

    # --- hand-over between front ends --------------------------------------------------------
    async def _hand_over(self, node: str, session_id: str) -> bool:
        """Ask `node` to end its stream into the session; True once it did (its finals and
        counters are in Redis then), False if it is not alive or did not answer in time."""
        try:
            (alive,) = await self.link.read(("EXISTS", alive_key(node)))
        except RedisUnavailable:
            return False
        if not alive:
            log.info("session %s: front end %s is gone; continuing from what Redis holds", session_id, node)
            return False
        request = secrets.token_hex(8)
        answered = asyncio.get_running_loop().create_future()
        self._requests[request] = answered
        message = {"kind": "hand_over", "session": session_id, "request": request, "reply_to": self.node}
        self.link.write(("PUBLISH", node_channel(node), json.dumps(message)))
        try:
            await asyncio.wait_for(answered, self.hand_over_timeout_s)
            return True
        except TimeoutError:
            log.warning("session %s: front end %s did not hand it over in time; continuing", session_id, node)
            return False
        finally:
            del self._requests[request]

    def _on_request(self, message: dict[str, Any]) -> None:
        if message["kind"] == "released":
            answered = self._requests.get(message["request"])
            if answered is not None and not answered.done():
                answered.set_result(None)
        elif message["kind"] == "hand_over":
            task = asyncio.create_task(self._release(message["session"], message["request"], message["reply_to"]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _release(self, session_id: str, request: str, reply_to: str) -> None:
        """Another front end opens a stream into a session streamed into here: this one ends."""
        session = self.hub.find(session_id)
        if session is not None and session.owner is not None:
            await session.owner.hand_over()
        # Written after the stream's finals and counters (the queue keeps order): once the asker
        # reads the answer, Redis holds them.
        self.link.write(("PUBLISH", node_channel(reply_to), json.dumps({"kind": "released", "request": request})))

    # --- liveness ----------------------------------------------------------------------------
    def _beat(self) -> None:
        """This front end is alive; the sessions streamed into here stay (a long pause is no expiry)."""
        commands: list[tuple[Any, ...]] = [("SET", alive_key(self.node), "1", "EX", max(1, math.ceil(self.node_ttl_s)))]
        for sid in self._streaming:
            commands += [("EXPIRE", state_key(sid), self.keep_s), ("EXPIRE", finals_key(sid), self.keep_s)]
        self.link.write(*commands)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.node_ttl_s / 3)
            if self.link.healthy:  # while Redis is away, beats would only pile up in the queue
                self._beat()

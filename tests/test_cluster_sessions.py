"""Session stores (issue 18): the in-process SessionHub and RedisSessions against a real redis-server,
through the SessionStore calls the server makes. "Two front ends" are two stores: with Redis, two
RedisSessions on one Redis; in process, the same hub twice (one front end: what a single server does)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest

from server.auth import Principal
from server.sessions import SessionClient, SessionHub, SessionLimits, SessionRefused

pytest_plugins = ("tests.redis_server",)  # the redis_server fixture

_ids = itertools.count()


def _hub() -> SessionHub:
    return SessionHub(keep_s=600, max_finals=50, subscriber_partials=4, subscriber_backlog=100, limits=SessionLimits())


async def _redis_store(url: str, node: str, hand_over_timeout_s: float = 10.0):
    from server.redis_sessions import RedisSessions

    store = RedisSessions(
        _hub(), url, node_ttl_s=3, max_queued_writes=1000, hand_over_timeout_s=hand_over_timeout_s, node=node
    )
    await store.start()
    return store


@pytest.fixture(params=["in-process", "redis"])
async def front_ends(request):
    """(A, B): two front ends' session stores."""
    if request.param == "in-process":
        hub = _hub()
        yield hub, hub
        return
    server = request.getfixturevalue("redis_server")
    run = next(_ids)
    a = await _redis_store(server.url, f"a{run}")
    b = await _redis_store(server.url, f"b{run}")
    yield a, b
    await a.close()
    await b.close()


@dataclass
class Owner:
    """Stands in for a Connection streaming into a session (StreamOwner): hand_over ends its stream."""

    store: object
    client: SessionClient = field(default_factory=SessionClient)
    next_segment_id: int = 0
    audio_ms: int = 0
    handed_over: bool = False
    session: object = None

    def stream_into(self, session) -> None:
        session.owner, self.session = self, session

    async def hand_over(self) -> None:
        self.handed_over = True
        self.store.end_stream(self.session, self, self.next_segment_id, self.audio_ms)


def final(session_id: str, segment_id: int, start_ms: int, end_ms: int) -> dict:
    return {"type": "final", "session_id": session_id, "segment_id": segment_id, "start_ms": start_ms,
            "end_ms": end_ms, "final_text": f"words {segment_id}", "is_final": False}  # fmt: skip


async def next_message(outbox, timeout: float = 10) -> dict:
    message = await asyncio.wait_for(outbox.get(), timeout)
    assert message is not None
    return message


async def settle(*stores) -> None:
    """Queued Redis writes have landed (nothing to wait for in process)."""
    for store in stores:
        if hasattr(store, "link"):
            await asyncio.wait_for(store.link.flushed(), 10)


async def test_a_stream_opened_on_the_other_front_end_continues_the_session_after_its_finals(front_ends):
    a, b = front_ends
    sid = f"lecture-{next(_ids)}"
    owner = Owner(a)
    session = await a.join(sid, owner.client)
    owner.stream_into(session)
    for segment in range(3):
        a.publish(session, final(sid, segment, segment * 1000, segment * 1000 + 800))
    a.end_stream(session, owner, 3, 3200)
    await settle(a)
    resumed = await b.join(sid, SessionClient())
    assert (resumed.next_segment_id, resumed.audio_ms) == (3, 3200)
    missed = resumed.finals_after(0)
    assert [f["segment_id"] for f in missed] == [1, 2] and all(f["replayed"] for f in missed)


async def test_a_follower_on_one_front_end_sees_finals_published_on_the_other_once(front_ends):
    a, b = front_ends
    sid = f"overlay-{next(_ids)}"
    session = await a.join(sid, SessionClient())
    a.publish(session, final(sid, 0, 0, 900))
    await settle(a)
    outbox = await b.follow(sid)
    replayed = await next_message(outbox)
    assert replayed["segment_id"] == 0 and replayed["replayed"]
    a.publish(session, {"type": "partial", "session_id": sid, "segment_id": 1, "text": "and th"})
    a.publish(session, final(sid, 1, 1000, 1900))
    a.publish(session, {"type": "end", "session_id": sid, "is_final": True})
    seen = [await next_message(outbox) for _ in range(3)]
    assert [m["type"] for m in seen] == ["partial", "final", "end"]
    assert seen[1]["segment_id"] == 1 and not seen[1].get("replayed")
    with pytest.raises(TimeoutError):
        await next_message(outbox, timeout=0.5)  # nothing twice
    b.unsubscribe(sid, outbox)


async def test_a_session_belongs_to_the_token_that_made_it_on_every_front_end(front_ends):
    a, b = front_ends
    sid = f"private-{next(_ids)}"
    alice = Principal("alice", admin=False, owner_id="owner-alice")
    mallory = Principal("mallory", admin=False, owner_id="owner-mallory")
    owner = Owner(a, SessionClient(alice))
    session = await a.join(sid, owner.client)
    a.end_stream(session, owner, 0, 0)
    await settle(a)
    for attempt in (b.join(sid, SessionClient(mallory)), b.follow(sid, SessionClient(mallory))):
        with pytest.raises(SessionRefused) as refused:
            await attempt
        assert refused.value.code == "forbidden"
    assert (await b.join(sid, SessionClient(alice))).owner_id == "owner-alice"
    followed = f"followed-{next(_ids)}"  # a session nobody streamed into: its first follower claims it
    outbox = await a.follow(followed, SessionClient(alice))
    await settle(a)
    with pytest.raises(SessionRefused):
        await b.join(followed, SessionClient(mallory))
    a.unsubscribe(followed, outbox)


async def test_a_stream_on_another_front_end_is_handed_over_before_the_new_one_continues(redis_server):
    run = next(_ids)
    a, b = await _redis_store(redis_server.url, f"a{run}"), await _redis_store(redis_server.url, f"b{run}")
    try:
        sid = f"takeover-{run}"
        old = Owner(a, next_segment_id=2, audio_ms=2500)
        session = await a.join(sid, old.client)
        old.stream_into(session)
        a.publish(session, final(sid, 0, 0, 800))
        a.publish(session, final(sid, 1, 1000, 1800))  # the last one, decoded while handing over
        resumed = await b.join(sid, SessionClient())
        assert old.handed_over and session.owner is None
        assert (resumed.next_segment_id, resumed.audio_ms) == (2, 2500)
        assert [f["segment_id"] for f in resumed.finals_after(-1)] == [0, 1]
    finally:
        await a.close()
        await b.close()


async def test_a_stream_is_named_in_redis_once_its_front_end_accepted_it(redis_server):
    # Another front end decides whether to ask for a hand-over by reading this name: queued behind
    # the stream's start, a join there right after it read no owner (both then streamed into the
    # session; the test above failed 1 run in 12 under load).
    from server.redis_sessions import state_key

    run = next(_ids)
    a = await _redis_store(redis_server.url, f"a{run}")
    try:
        sid = f"claimed-{run}"
        await a.join(sid, SessionClient())
        (node,) = await a.link.read(("HGET", state_key(sid), "node"))
        assert node in (a.node, a.node.encode())
    finally:
        await a.close()


async def test_a_dead_front_end_is_not_waited_for_and_numbering_goes_on_after_its_last_final(redis_server):
    run = next(_ids)
    a = await _redis_store(redis_server.url, f"a{run}")
    b = await _redis_store(redis_server.url, f"b{run}", hand_over_timeout_s=60)
    sid = f"crashed-{run}"
    session = await a.join(sid, SessionClient())
    session.owner = Owner(a)
    a.publish(session, final(sid, 0, 0, 800))
    a.publish(session, final(sid, 1, 1000, 1700))
    await settle(a)
    await a.close()  # gone without ending its stream (as after kill -9: its liveness key is gone)
    try:
        resumed = await asyncio.wait_for(b.join(sid, SessionClient()), 5)
        assert resumed.next_segment_id == 2 and resumed.audio_ms == 1700  # its counters were never written
    finally:
        await b.close()


async def test_connections_of_a_front_end_that_died_stop_counting_after_node_ttl_s(redis_server):
    from server.cluster_limits import ClusterConnections

    run = next(_ids)
    a, b = await _redis_store(redis_server.url, f"a{run}"), await _redis_store(redis_server.url, f"b{run}")
    token = Principal(f"token-{run}", admin=False, owner_id=f"owner-{run}")

    def counts(store):
        return ClusterConnections(store.link, store.node, 1, 0, 0, auth_on=True, ttl_s=1.5)

    on_a, on_b = counts(a), counts(b)
    try:
        on_b.start()
        assert await on_a.admit(token, "10.0.0.1", stream=True) is None  # A never renews: it "died"
        refused = await on_b.admit(token, "10.0.0.2", stream=True)
        assert "max_connections_per_token = 1" in refused and "across the cluster" in refused
        await asyncio.sleep(2)
        assert await on_b.admit(token, "10.0.0.2", stream=True) is None
        await asyncio.sleep(2)  # B renews its own: it still counts
        assert await on_a.admit(token, "10.0.0.1", stream=True) is not None
        on_b.release(token, "10.0.0.2", stream=True)
        await settle(b)
        assert await on_a.admit(token, "10.0.0.1", stream=True) is None
    finally:
        on_b.close()
        await a.close()
        await b.close()


@pytest.mark.parametrize(
    "cluster, expected",
    [
        ({"redis_url": "http://:secret@redis.lan"}, "cluster.redis_url must be a redis://"),
        ({"redis_urls": "redis://redis.lan"}, "unknown setting(s) in [cluster]: redis_urls"),
        ({"node_ttl_s": 0}, "cluster.node_ttl_s must be between"),
        ({"max_queued_writes": 10}, "cluster.max_queued_writes must be between"),
    ],
)
def test_cluster_redis_settings_are_checked_at_start(cluster, expected):
    from settings.config import ConfigError
    from tests.conftest import make_config

    with pytest.raises(ConfigError) as refused:
        make_config(cluster=cluster)
    assert expected in str(refused.value) and "secret" not in str(refused.value)

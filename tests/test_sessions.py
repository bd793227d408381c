"""Captions sessions across connections: subscribers (overlays), resume after a dropped socket,
takeover by a new connection - over real sockets.

The servers decode with KnownPhrasesEngine (tests/engines.py), a stand-in with no model that hears
only the phrases below wherever their exact samples lie whole in a segment: the word checks here
show that a session's own audio came through whole and in order, and tell sessions apart; no test
here is about recognition itself."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import deque

import pytest
import websockets

from tests.engines import KnownPhrasesEngine
from tests.server_thread import servers_on
from tests.speech import compose
from tests.wsclient import START, connect, finals, recv, send_audio, start, until_end, words

FIRST = compose([0.3, "good morning everyone", 0.8])
SECOND = compose([0.3, "please open the door", 0.8])
HALF_SPOKEN = compose([0.3, "thank you very much"])  # no trailing silence: the segment is still open
KNOWN_PHRASES = ["good morning everyone", "please open the door", "thank you very much"]


@pytest.fixture(scope="module")
def phrase_engine():
    return KnownPhrasesEngine(KNOWN_PHRASES)


@pytest.fixture(scope="module")
def shared_server(scorer, phrase_engine):
    """conftest's shared_server on the stand-in."""
    with servers_on(phrase_engine, scorer) as start:
        yield start()


async def subscriber(url: str, session: str):
    ws = await websockets.connect(f"{url}/subscribe?session={session}", ping_interval=None)
    hello = await recv(ws)
    assert hello == {"type": "subscribed", "session_id": session, "text": "", "is_final": False}
    return ws


async def collect_until_end(ws, timeout=60) -> list[dict]:
    messages = []
    while not messages or messages[-1].get("type") != "end":
        messages.append(await recv(ws, timeout))
    return messages


async def stream(url: str, audio, **start_fields) -> tuple[dict, list[dict]]:
    async with await connect(url) as ws:
        ready = await start(ws, **start_fields)
        await send_audio(ws, audio)
        await ws.send(json.dumps({"is_speaking": False}))
        return ready, await until_end(ws)


async def test_a_display_subscribed_to_a_session_sees_its_captions_live_and_a_late_one_gets_them_replayed(
    shared_server,
):
    early = await subscriber(shared_server.url, "lecture-1")
    ready, replies = await stream(shared_server.url, FIRST.audio, session_id="lecture-1")
    assert ready["session_id"] == "lecture-1" and ready["resumed"] is False
    seen = await collect_until_end(early)
    assert [f["final_text"] for f in finals(seen)] == [f["final_text"] for f in finals(replies)]
    assert all(m["session_id"] == "lecture-1" for m in seen)
    late = await subscriber(shared_server.url, "lecture-1")
    replayed = await recv(late)
    assert replayed["type"] == "final" and replayed["replayed"] is True
    assert words(replayed["final_text"]) == "good morning everyone"
    await early.close()
    await late.close()


async def test_sessions_are_separate_and_a_generated_id_is_returned(shared_server):
    other = await subscriber(shared_server.url, "someone-else")
    ready, _ = await stream(shared_server.url, FIRST.audio)
    assert len(ready["session_id"]) == 12
    with pytest.raises(asyncio.TimeoutError):
        await recv(other, timeout=1.0)  # nothing of another session leaks here
    await other.close()


async def test_reconnect_with_resume_gets_the_missed_final_once_and_the_session_continues(shared_server):
    session = "resume-test"
    async with await connect(shared_server.url) as ws:
        await start(ws, session_id=session)
        await send_audio(ws, FIRST.audio)
        first = await recv(ws)
        while first.get("type") != "final":
            first = await recv(ws)
        await send_audio(ws, HALF_SPOKEN.audio)  # mid-segment when the network drops
        await asyncio.sleep(0.5)
        ws.transport.abort()
    assert first["segment_id"] == 0
    async with await connect(shared_server.url) as ws:
        ready = await start(ws, session_id=session, resume_after=first["segment_id"])
        assert ready["resumed"] is True
        missed = await recv(ws)
        assert missed["type"] == "final" and missed["replayed"] is True and missed["segment_id"] == 1
        assert words(missed["final_text"]) == "thank you very much"
        await send_audio(ws, SECOND.audio)
        await ws.send(json.dumps({"is_speaking": False}))
        rest = await until_end(ws)
    live = finals(rest)
    assert [f["segment_id"] for f in live] == [2] and words(live[0]["final_text"]) == "please open the door"
    # The session's timeline continues: the new segment starts after everything heard before.
    assert live[0]["start_ms"] > missed["end_ms"] > first["end_ms"]
    assert not any(f.get("replayed") for f in live)


async def test_a_second_connection_on_a_live_session_takes_it_over_after_the_first_finishes(shared_server):
    session = "takeover"
    async with await connect(shared_server.url) as old:
        await start(old, session_id=session)
        await send_audio(old, HALF_SPOKEN.audio)
        await asyncio.sleep(0.5)
        async with await connect(shared_server.url) as new:
            ready = await start(new, session_id=session, resume_after=-1)
            old_replies = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    old_replies.append(await recv(old))
            assert closed.value.rcvd.code == 4001
            assert [words(f["final_text"]) for f in finals(old_replies)] == ["thank you very much"]
            replayed = await recv(new)
            assert ready["resumed"] and replayed["replayed"] and replayed["segment_id"] == 0


@pytest.mark.parametrize("session_id", ["has space", "x" * 65, 5, "../etc"])
async def test_bad_session_id_is_refused_clearly(shared_server, session_id):
    async with await connect(shared_server.url) as ws:
        await ws.send(json.dumps({"mode": "2pass", "session_id": session_id}))
        reply = await recv(ws)
        assert reply["type"] == "error" and reply["code"] == "bad_setting" and "session_id" in reply["message"]
        await start(ws)  # the connection still works


def test_bad_subscribe_session_is_a_400(shared_server):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(shared_server.http + "/subscribe?session=a%20b", timeout=10)
    assert caught.value.code == 400


def test_static_client_files_cannot_escape_their_folder(shared_server):
    for path in ("/client_js/../settings/config.py", "/client_js/%2e%2e/config.toml"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(shared_server.http + path, timeout=10)
        assert caught.value.code in (403, 404)


def test_only_the_pages_own_files_are_served_from_client_js(shared_server):
    from server.pages import CLIENT_DIR

    if (CLIENT_DIR / "livecaption.js").is_file():
        with urllib.request.urlopen(shared_server.http + "/client_js/livecaption.js", timeout=10) as response:
            assert response.status == 200 and b"CaptionClient" in response.read()
    private = ("/client_js/node_modules/ws/package.json", "/client_js/test/x.test.js", "/client_js/.hidden.js",
               "/client_js/tsconfig.json", "/client_js/package.json", "/client_js/package-lock.json")  # fmt: skip
    for path in private:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(shared_server.http + path, timeout=10)
        assert caught.value.code == 404


def test_idle_sessions_are_forgotten_after_keep_s_and_busy_ones_are_kept():
    from server.sessions import SWEEP_INTERVAL_S, SessionHub

    now = [1000.0]
    hub = SessionHub(keep_s=600, max_finals=10, subscriber_partials=2, subscriber_backlog=10, clock=lambda: now[0])
    hub.get("idle")
    hub.get("streaming").owner = object()  # a connection is streaming into it
    watched = hub.subscribe("watched")  # an overlay is showing it
    hub.publish(hub.get("idle"), {"type": "final", "segment_id": 0, "text": "kept until forgotten"})
    now[0] += 599
    hub.get("new")
    assert len(hub) == 4  # nothing idle long enough yet
    now[0] += 2
    hub.get("newer")
    assert len(hub) == 4  # "idle" forgotten; the streamed and the watched ones are kept
    assert hub.get("idle").finals == deque()  # a fresh, empty session under the old name
    hub.unsubscribe("watched", watched)
    now[0] += 600 + SWEEP_INTERVAL_S
    hub.get("latest")  # one sweep: every session idle since then is gone, "streaming" stays
    assert sorted(hub._sessions) == ["latest", "streaming"]


# --- bounded sessions (issue 15 H2) -------------------------------------------------------------
def _hub(now, **limits):
    from server.sessions import SessionHub, SessionLimits

    return SessionHub(600, 10, 2, 10, clock=lambda: now[0], limits=SessionLimits(**limits))


def test_a_connection_at_its_session_limit_forgets_its_own_least_recently_used_idle_session():
    from server.auth import Principal
    from server.sessions import SessionClient, SessionRefused

    now = [0.0]
    hub = _hub(now, per_connection=3)
    one, other = SessionClient(address="10.0.0.1"), SessionClient(address="10.0.0.1")
    for name in ("a", "b", "c"):
        hub.open_stream(name, one)
        now[0] += 1
    hub.get("a")  # used again: "b" is now the least recently used
    hub.open_stream("x", other)
    hub.open_stream("d", one)
    assert sorted(hub._sessions) == ["a", "c", "d", "x"]  # "b" made room; the other connection's kept
    for name in ("a", "c", "d"):
        hub.get(name).owner = object()  # all streaming: nothing may be forgotten
    with pytest.raises(SessionRefused) as refused:
        hub.open_stream("e", one)
    assert refused.value.code == "busy" and "max_sessions_per_connection" in refused.value.message
    # per token: only with auth on (with auth off every caller is the same "anonymous")
    hub = _hub(now, per_token=2)
    alice = Principal("token-a", admin=False, owner_id="owner-a")
    for _ in range(5):
        hub.open_stream(None, SessionClient(alice))
    assert len(hub) == 2
    for _ in range(5):
        hub.open_stream(None, SessionClient())
    assert len(hub) == 7


def test_the_total_and_per_address_limits_forget_idle_sessions_first_and_refuse_only_when_all_are_busy():
    from server.sessions import SessionClient, SessionRefused

    now = [0.0]
    hub = _hub(now, total=3, per_address=2)
    near, far = SessionClient(address="10.0.0.1"), SessionClient(address="10.0.0.2")
    hub.open_stream("n1", near)
    hub.open_stream("n2", near)
    hub.open_stream("n3", SessionClient(address="10.0.0.1"))  # same address, new connection
    assert sorted(hub._sessions) == ["n2", "n3"]
    hub.open_stream("f1", far)
    hub.open_stream("f2", far)  # the total: the oldest idle session anywhere makes room
    assert sorted(hub._sessions) == ["f1", "f2", "n3"]
    for name in ("f1", "f2", "n3"):
        hub.subscribe(name)
    with pytest.raises(SessionRefused) as refused:
        hub.open_stream("f3", SessionClient(address="10.0.0.3"))
    assert "max_sessions" in refused.value.message


def test_forgetting_idle_sessions_looks_only_at_the_ones_it_forgets():
    """O(forgotten) per sweep, not O(sessions): 20k kept sessions, ten expire; a sweep reads the
    idle time of those ten and the first one still fresh."""
    from server.sessions import SWEEP_INTERVAL_S, CaptionSession

    reads = [0]

    class Counting(CaptionSession):
        def __getattribute__(self, name):
            if name == "last_used":
                reads[0] += 1
            return super().__getattribute__(name)

    now = [0.0]
    hub = _hub(now)
    for index in range(20_000):
        now[0] = 1.0 if index < 10 else 100.0
        hub.get(f"s{index}")
    for session in hub._sessions.values():
        session.__class__ = Counting
    now[0] = 601.5 + SWEEP_INTERVAL_S
    reads[0] = 0
    hub.get("s15000")
    assert len(hub) == 20_000 - 10 and reads[0] <= 20


# --- whose session (issue 15 M1) ----------------------------------------------------------------
OWNER, INTRUDER, ADMIN = "owner-token-0000001", "other-token-0000002", "admin-token-0000003"


async def test_a_live_session_belongs_to_the_token_that_made_it(start_stand_in):
    server = start_stand_in(auth={"tokens": [OWNER, INTRUDER], "admin_tokens": [ADMIN]})

    def as_(token):
        return {"additional_headers": {"Authorization": f"Bearer {token}"}, "ping_interval": None}

    async with websockets.connect(server.url, **as_(OWNER)) as owner:
        await start(owner, session_id="private-lecture")
        await send_audio(owner, FIRST.audio)
        first = await recv(owner)
        assert first["type"] in ("partial", "final")
        # another token may not follow it, resume it or take it over
        follower = await websockets.connect(f"{server.url}/subscribe?session=private-lecture", **as_(INTRUDER))
        refused = await recv(follower)
        assert refused["code"] == "forbidden" and "another token" in refused["message"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(follower)
        assert closed.value.rcvd.code == 1008
        async with websockets.connect(server.url, **as_(INTRUDER)) as intruder:
            await intruder.send(json.dumps({**START, "session_id": "private-lecture", "resume_after": -1}))
            refused = await recv(intruder)
            assert refused["type"] == "error" and refused["code"] == "forbidden"
        # the owner's stream went on undisturbed; an admin may follow it
        watcher = await websockets.connect(f"{server.url}/subscribe?session=private-lecture", **as_(ADMIN))
        assert (await recv(watcher))["type"] == "subscribed"
        await owner.send(json.dumps({"is_speaking": False}))
        replies = [first, *await until_end(owner)]
        assert [words(f["final_text"]) for f in finals(replies)] == ["good morning everyone"]
        await watcher.close()
    # the same token may follow and resume its own session
    own = await websockets.connect(f"{server.url}/subscribe?session=private-lecture", **as_(OWNER))
    assert (await recv(own))["type"] == "subscribed"
    await own.close()


async def test_a_display_is_closed_with_1001_when_the_server_stops(start_stand_in):
    # Displays and caption sockets learn that the server stops from the same place (Admission).
    server = start_stand_in()
    display = await subscriber(server.url, "closing-time")
    stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await recv(display, 30)
    await stopper
    assert display.close_code == 1001

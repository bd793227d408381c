"""Cluster figures on /healthz and /metrics (issue 18): two front ends sharing a real redis-server and
a throwaway PostgreSQL report the same sessions, followers, connections and queued files, each its
own figures beside them; a front end that stops no longer counts."""

from __future__ import annotations

import math
import urllib.request

import websockets

from jobs.pg_store import PostgresStore
from tests.conftest import make_config
from tests.server_thread import ServerThread
from tests.speech import compose
from tests.test_cluster_servers import LengthEngine, healthz
from tests.wsclient import connect, recv, send_audio, start, until

pytest_plugins = ("tests.redis_server",)  # the redis_server fixture

SPEECH = compose([0.3, "good morning everyone", 0.8])
FILES = [(f"{name}.wav", f"/nowhere/{name}.wav", f"sha-{name}") for name in "abc"]


def metrics(server) -> dict[str, float]:
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {name: float(value) for name, value in (line.rsplit(" ", 1) for line in lines if not line.startswith("#"))}


def cluster_of(server) -> dict:
    return healthz(server)["cluster"]


async def test_two_front_ends_report_the_same_cluster_figures(redis_server, postgres_url, scorer):
    redis_server.flush()
    # Files held by a front end outside the test's two (an hour-long lease): they stay pending.
    holder = PostgresStore(postgres_url, lease_s=3600)
    holder.create_job(FILES, {})
    claimed = []
    for _ in FILES:
        claimed.append(holder.claim_file({row.id for row in claimed}))
    holder.start_file(claimed[0].id, None, "instant", "stand-in")
    cluster = {"redis_url": redis_server.url, "postgres_url": postgres_url, "node_ttl_s": 3}
    a, b = (ServerThread(make_config(cluster=cluster), LengthEngine(), scorer).start() for _ in range(2))
    sockets = []
    try:
        for server, session in ((a, "hall-1"), (a, "hall-2"), (b, "hall-3")):
            ws = await connect(server.url)
            sockets.append(ws)
            await start(ws, session_id=session)
            await send_audio(ws, SPEECH.audio)
        overlay = await websockets.connect(f"{b.url}/subscribe?session=hall-1", ping_interval=None)
        sockets.append(overlay)
        assert (await recv(overlay))["type"] == "subscribed"

        expected = {
            "front_ends": 2,
            "sessions": 3,
            "followers": 1,
            "connections": 3,
            "files": {"queued": 2, "running": 1},
        }
        await until(lambda: cluster_of(a) == expected == cluster_of(b), timeout=30)
        here_a, here_b = healthz(a), healthz(b)
        assert (here_a["live_sessions"], here_a["followers"], here_a["connections"]) == (2, 0, 2)
        assert (here_b["live_sessions"], here_b["followers"], here_b["connections"]) == (1, 1, 1)
        for server, live in ((a, 2), (b, 1)):
            figures = metrics(server)
            assert figures["caption_live_sessions"] == live
            assert figures["caption_cluster_front_ends"] == 2 and figures["caption_cluster_sessions"] == 3
            assert figures["caption_cluster_followers"] == 1 and figures["caption_cluster_connections"] == 3
            assert figures['caption_files_pending{status="queued"}'] == 2
            assert figures['caption_files_pending{status="running"}'] == 1

        for ws in sockets[2:]:  # B's stream and its overlay end
            await ws.close()
        holder.finish_file(claimed[0].id)
        after = {"front_ends": 2, "sessions": 2, "followers": 0, "connections": 2, "files": {"queued": 2, "running": 0}}
        await until(lambda: cluster_of(a) == after == cluster_of(b), timeout=30)

        b.stop()  # a clean stop takes B out at once, not node_ttl_s later
        await until(lambda: cluster_of(a)["front_ends"] == 1, timeout=30)
        assert cluster_of(a) == {**after, "front_ends": 1}
    finally:
        for ws in sockets:
            await ws.close()
        a.stop()
        b.stop()
        holder.close()


async def test_without_redis_the_cluster_is_this_front_end_and_its_sqlite_store(scorer):
    server = ServerThread(make_config(), LengthEngine(), scorer).start()
    try:
        async with await connect(server.url) as ws:
            await start(ws, session_id="alone")
            await until(lambda: cluster_of(server)["sessions"] == 1, timeout=30)
            assert cluster_of(server) == {
                "front_ends": 1,
                "sessions": 1,
                "followers": 0,
                "connections": 1,
                "files": {"queued": 0, "running": 0},
            }
    finally:
        server.stop()


async def test_while_redis_is_away_the_shared_figures_are_unknown_not_zero(redis_server, scorer):
    redis_server.flush()
    cluster = {"redis_url": redis_server.url, "node_ttl_s": 3}
    server = ServerThread(make_config(cluster=cluster), LengthEngine(), scorer).start()
    try:
        async with await connect(server.url) as ws:
            await start(ws, session_id="outage")
            await until(lambda: cluster_of(server)["sessions"] == 1, timeout=30)
            redis_server.stop()
            try:
                await until(lambda: cluster_of(server)["sessions"] is None, timeout=30)
                away = cluster_of(server)
                assert away["front_ends"] is away["followers"] is away["connections"] is None
                assert away["files"] == {"queued": 0, "running": 0}  # the job store still answers
                figures = metrics(server)
                assert math.isnan(figures["caption_cluster_sessions"]) and figures["caption_live_sessions"] == 1
            finally:
                redis_server.start()
            await until(lambda: cluster_of(server)["sessions"] == 1, timeout=30)
    finally:
        server.stop()

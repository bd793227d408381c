"""The executor on both decode backends, and the shared Ray Serve pool ([inference] backend = "ray").

One local Ray cluster for the module (starting Ray costs seconds; loopback only, CPU replicas, no
reserved cores so several pools fit on a small machine), stopped at the end. The executor tests are
parametrized over the local backend and a one-replica pool running one batch at a time: the same
answers, the same order. Then what only a pool has: two front ends sharing it, a replica killed
mid-batch (no final lost, each delivered once), a live final not delayed by a file job beyond the
one batch in progress, streaming caches carried with each chunk, and the real Whisper engine.
Times are never asserted; waits are bounded.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import time
from dataclasses import replace

import numpy as np
import pytest

from inference.allocator import MALLOC_ENV, operator_chose_malloc_settings
from inference.backend import LocalBackend, PoolUnavailable
from inference.batch_decoder import BatchOutcome
from inference.engines.base import DecodeOptions, DecodeResult
from inference.executor import ExecutorClosed, InferenceExecutor
from inference.scheduler import JOBS, Lane
from tests.pool_engines import POISON, SPOKEN, calls, clip, make_decoder, malloc_environment
from tests.wsclient import until

ray = pytest.importorskip("ray")

BOUND_S = 120  # no wait in this module lasts longer (a stuck pool fails the test instead of hanging CI)


@pytest.fixture(scope="module")
def ray_cluster():
    from inference.ray_backend import PoolSettings, connect, shutdown

    connect(PoolSettings(replicas_keep_decode_memory=True))  # (CPU replicas, as run_server asks for Whisper)
    yield
    shutdown()


def delete_app(app: str) -> None:
    """Delete a Serve application without waiting for its replicas to stop: each drains for Serve's
    graceful_shutdown_wait_loop_s (2 s) first, 3 s a delete. No test deploys an app name twice, and
    the module's shutdown stops whatever is left."""
    from ray import serve

    serve.delete(app, _blocking=False)


def pool_settings(app: str, replicas: int, in_flight: int, max_replicas_override: int = 0, **more) -> object:
    from inference.ray_backend import PoolSettings

    return PoolSettings(
        app=app,
        min_replicas=replicas,
        max_replicas=max_replicas_override or replicas,
        num_cpus=0,
        batches_in_flight=in_flight,
        max_batch_size=4,
        background_batch_size=1,
        **more,
    )


def deploy_pool(app: str, replicas: int, marker_dir: str = "") -> None:
    from inference.ray_backend import deploy

    deploy(pool_settings(app, replicas, 1), functools.partial(make_decoder, marker_dir))


@pytest.fixture(scope="module")
def one_replica_markers(tmp_path_factory):
    """Where one_replica's engine notes the start of each slow model call (tests/pool_engines.py)."""
    return tmp_path_factory.mktemp("one-replica-markers")


@pytest.fixture(scope="module")
def one_replica(ray_cluster, one_replica_markers):
    """A pool of one replica (like the local backend: one device)."""
    deploy_pool("test-one", 1, str(one_replica_markers))
    yield "test-one"
    delete_app("test-one")


@pytest.fixture(scope="module")
def marker_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def two_replicas(ray_cluster, marker_dir):
    deploy_pool("test-two", 2, str(marker_dir))
    yield "test-two"
    delete_app("test-two")


async def executor_on(kind: str, app: str = "", max_batch=4, max_wait_ms=20, in_flight=1, observe=None):
    """An executor over the fake engine: here (local), or in the pool `app` (one background
    request per batch, as on a CPU)."""
    if kind == "local":
        decoder = make_decoder()
        engine, backend = decoder.engines["fake"], LocalBackend(decoder)
    else:
        from inference.ray_backend import RayBackend

        settings = pool_settings(app, 1, in_flight)
        backend = await RayBackend.open(settings, functools.partial(make_decoder), observe)
        engine = backend.live_engine
    executor = InferenceExecutor(engine, None, max_batch, max_wait_ms, 64, backend=backend, background_batch_size=1)
    await executor.start()
    return executor


async def model_calls(executor) -> list[dict]:
    return await executor.backend.run_on_engines(calls)


def text_of(audio: np.ndarray) -> str:
    return f"speech {len(audio) / 16000:.2f} s"


@pytest.fixture(params=["local", "ray"])
def backend_kind(request):
    if request.param == "ray":
        request.getfixturevalue("one_replica")
    return request.param


async def test_finals_from_many_streams_share_one_model_call(backend_kind):
    executor = await executor_on(backend_kind, "test-one")
    before = len(await model_calls(executor))
    clips = [clip(0.5 + i / 10) for i in range(4)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*[executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips)]), BOUND_S
        )
        made = (await model_calls(executor))[before:]
    finally:
        await executor.close()
    assert [c["lengths"] for c in made] == [[len(c) for c in clips]]
    assert [r.text for r in results] == [text_of(c) for c in clips]
    assert all("queue_ms" in r.extra and r.extra["engine"] == "fake" for r in results)


async def test_finals_jump_ahead_of_partials_and_stale_partials_are_dropped(backend_kind):
    executor = await executor_on(backend_kind, "test-one", max_batch=1, max_wait_ms=0)
    before = len(await model_calls(executor))
    clips = [clip(0.5, head=0.5), clip(0.6), clip(0.7), clip(0.8)]  # the first holds the model 0.5 s
    try:
        first = executor.submit_final(9, 0, clips[0], DecodeOptions())
        await asyncio.sleep(0.2)  # the first is in the model
        old_partial = executor.submit_partial(1, 0, clips[1][:8000], DecodeOptions(partial=True))
        new_partial = executor.submit_partial(1, 0, clips[1], DecodeOptions(partial=True))
        other_partial = executor.submit_partial(2, 3, clips[2], DecodeOptions(partial=True))
        final = executor.submit_final(3, 0, clips[3], DecodeOptions())
        assert await old_partial is None  # superseded by a newer partial of the same stream
        superseded = executor.submit_final(2, 3, clips[2], DecodeOptions())
        assert await other_partial is None  # the segment's final makes its pending partial stale
        await asyncio.wait_for(asyncio.gather(first, final, new_partial, superseded), BOUND_S)
        made = (await model_calls(executor))[before:]
    finally:
        await executor.close()
    assert [c["lengths"][0] for c in made] == [len(clips[0]), len(clips[3]), len(clips[2]), len(clips[1])]
    assert (await final).text == text_of(clips[3]) and executor.stats.partials_dropped == 2


async def test_one_poisoned_request_does_not_fail_its_batch_mates_and_errors_reach_the_caller(backend_kind):
    executor = await executor_on(backend_kind, "test-one")
    try:
        good, bad = await asyncio.wait_for(
            asyncio.gather(
                executor.submit_final(0, 0, clip(0.5), DecodeOptions()),
                executor.submit_final(1, 0, clip(0.6, head=POISON), DecodeOptions()),
                return_exceptions=True,
            ),
            BOUND_S,
        )
        later = await asyncio.wait_for(executor.submit_final(0, 1, clip(0.7), DecodeOptions()), BOUND_S)
    finally:
        await executor.close()
    assert good.text == text_of(clip(0.5)) and later.text == text_of(clip(0.7))
    assert isinstance(bad, RuntimeError) and "injected model failure" in str(bad)


@pytest.mark.parametrize(
    "options, expected",
    [
        (DecodeOptions(language="en"), "it costs $25"),
        (DecodeOptions(language="en", itn=False), "it costs twenty five dollars"),  # the client turned ITN off
        (DecodeOptions(language="en", partial=True), "it costs twenty five dollars"),  # partials stay as heard
    ],
)
async def test_finals_get_inverse_text_normalisation_where_they_are_decoded(backend_kind, options, expected):
    executor = await executor_on(backend_kind, "test-one")
    try:
        submit = executor.submit_partial if options.partial else executor.submit_final
        result = await asyncio.wait_for(submit(0, 0, clip(0.5, head=SPOKEN), options), BOUND_S)
    finally:
        await executor.close()
    assert result.text == expected


async def test_streaming_chunks_keep_their_cache_between_calls(backend_kind):
    # Local: the engine's state, updated in place. Ray: carried with each chunk and replaced by the
    # copy that comes back, so the second chunk of a stream sees the first one's count.
    executor = await executor_on(backend_kind, "test-one")
    try:
        states = [executor.new_stream_state((5, 10, 5)) for _ in range(2)]
        texts = []
        for n in range(3):
            futures = [
                executor.submit_step(s, 0, state, clip(0.6), n == 2, DecodeOptions()) for s, state in enumerate(states)
            ]
            texts.append([r.text for r in await asyncio.wait_for(asyncio.gather(*futures), BOUND_S)])
    finally:
        await executor.close()
    assert texts == [["chunks 1"] * 2, ["chunks 2"] * 2, ["chunks 3 final"] * 2]


async def test_close_fails_queued_requests_instead_of_leaving_them_hanging(backend_kind):
    executor = await executor_on(backend_kind, "test-one", max_batch=1, max_wait_ms=0)
    running = executor.submit_final(0, 0, clip(0.5, head=0.5), DecodeOptions())
    await asyncio.sleep(0.1)
    queued = executor.submit_final(1, 0, clip(0.6), DecodeOptions())
    await executor.close()
    with pytest.raises(ExecutorClosed):
        await queued
    with pytest.raises((ExecutorClosed, asyncio.CancelledError)):
        await asyncio.wait_for(running, BOUND_S)
    with pytest.raises(ExecutorClosed):
        await executor.submit_final(2, 0, clip(0.7), DecodeOptions())


async def test_the_pool_describes_its_engines_to_the_front_end(one_replica):
    executor = await executor_on("ray", one_replica)
    try:
        engine = executor.engine
        assert (engine.name, engine.device, executor.streaming) == ("fake", "cpu", True)
        assert engine.language_problem("en") is None
        assert "'xx' is not one the fake knows" in engine.language_problem("xx")  # a code outside the table
        report = await executor.device_report()
        assert report["engines"][0]["name"] == "fake" and report["backend"]["backend"] == "ray"
        # Its replica's process was started with glibc's settings for CPU decodes (the module's
        # cluster asks for them: replicas_keep_decode_memory; glibc reads them at a process's start:
        # inference/allocator.py), unless the tests run with settings of their own, which it inherits.
        inherited = {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}
        expected = inherited if operator_chose_malloc_settings() else MALLOC_ENV
        assert await executor.backend.run_on_engines(malloc_environment) == expected
    finally:
        await executor.close()


async def test_two_front_ends_share_the_pool(two_replicas):
    seen: list[BatchOutcome] = []
    front_ends = [
        await executor_on("ray", two_replicas, in_flight=2, observe=lambda o, s: seen.append(o)) for _ in range(2)
    ]
    try:
        futures = {
            (f, i): e.submit_final(i, 0, clip(0.3 + f / 10 + i / 100, head=0.2), DecodeOptions())
            for f, e in enumerate(front_ends)
            for i in range(6)
        }
        results = await asyncio.wait_for(asyncio.gather(*futures.values()), BOUND_S)
    finally:
        for e in front_ends:
            await e.close()
    assert [r.text for r in results] == [text_of(clip(0.3 + f / 10 + i / 100)) for f, i in futures]
    assert len({o.replica for o in seen}) == 2  # both replicas decoded (each front end has 2 batches in flight)


async def test_a_replica_killed_mid_batch_loses_no_final(two_replicas, marker_dir):
    for old in marker_dir.glob("decoding-*"):
        old.unlink()
    seen: list[BatchOutcome] = []
    executor = await executor_on("ray", two_replicas, in_flight=2, observe=lambda o, s: seen.append(o))
    try:
        # Two batches of four, one per replica (2 in flight): the first one's model call sleeps 3 s
        # (its replica is killed in it), the second's does not, so the killed batch's retry finds a
        # free replica instead of waiting 3 s behind a second sleeping one.
        futures = [
            executor.submit_final(i, 0, clip(0.5 + i / 10, head=3.0 if i < 4 else 0.0), DecodeOptions())
            for i in range(8)
        ]
        deadline = time.monotonic() + BOUND_S
        while not (markers := list(marker_dir.glob("decoding-*"))) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        victim = int(markers[0].name.removeprefix("decoding-"))
        os.kill(victim, signal.SIGKILL)  # mid-batch: its model call sleeps for seconds more
        results = await asyncio.wait_for(asyncio.gather(*futures), BOUND_S)
    finally:
        await executor.close()
    assert [r.text for r in results] == [text_of(clip(0.5 + i / 10)) for i in range(8)]  # each once, none lost
    assert executor.backend.retries >= 1
    assert victim not in {o.extra["pid"] for o in seen}  # every answer came from a living replica
    assert executor.stats.decoded == 8 and executor.stats.errors == 0


async def test_a_live_final_waits_for_the_batch_in_progress_only(one_replica, one_replica_markers):
    # Front end A sends a file job (background, one segment per batch, two batches in the pool at
    # once); front end B's live final arrives while the replica decodes the first of them. In the
    # replica's priority queue it goes before A's queued second batch: it is the next model call.
    files = await executor_on("ray", one_replica, in_flight=2)
    live = await executor_on("ray", one_replica, in_flight=2)
    # One final first, so the one below does not pay for this front end's first request to the
    # pool (its handle finding the replica): under load that took longer than two 5 s file calls
    # (a CI-style run on 27 Nov saw four file calls start before the final reached the replica).
    await asyncio.wait_for(live.submit_final(0, 0, clip(0.5), DecodeOptions()), BOUND_S)
    before = len(await model_calls(live))
    try:
        # The first file segment's model call takes 5 s: the final below is sent as it starts (the
        # engine notes that start in a file; asking the replica would wait for the call to end,
        # and the final then came as the second one started: with a FIFO queue instead of the
        # priority queue the test still passed). The others take no time in the model.
        for old in one_replica_markers.glob("decoding-*"):
            old.unlink()
        segments = [
            files.submit_background(clip(1 + i / 100, head=5.0 if i < 1 else 0.0), DecodeOptions(), source=JOBS)
            for i in range(5)
        ]
        await until(lambda: any(one_replica_markers.glob("decoding-*")), BOUND_S)
        arrived = time.time()
        final_clip = clip(2.5)
        final = await asyncio.wait_for(live.submit_final(1, 0, final_clip, DecodeOptions()), BOUND_S)
        await asyncio.wait_for(asyncio.gather(*segments), BOUND_S)
        made = (await model_calls(live))[before:]
    finally:
        await files.close()
        await live.close()
    assert final.text == text_of(final_clip)
    lengths = [c["lengths"] for c in made]
    # The two file batches in flight may reach the replica in either order (one run on four busy
    # workers saw the second, instant one decoded first), so the 5 s call is found, not assumed first.
    slow = lengths.index([len(clip(1.0))])
    assert made[slow]["started"] < arrived and slow <= 1, made  # the first file segment was in the model
    assert lengths[slow + 1] == [len(final_clip)], made  # and the final went next, before the file's queued ones


async def test_the_real_whisper_engine_in_the_pool(ray_cluster, clips_and_phrases):
    # The production path: the replica builds the engines from config (build_decoder), as a server would.
    from inference.ray_backend import open_pool
    from settings.config import load

    config = load()
    config = replace(
        config,
        inference=replace(
            config.inference, engine="whisper", backend="ray", ray_app="test-whisper", ray_num_cpus=0.0, device="cpu"
        ),
        jobs=replace(config.jobs, engines=()),
    )
    backend = await open_pool(config)
    executor = InferenceExecutor(backend.live_engine, None, 4, 20, 64, backend=backend)
    await executor.start()
    clips, phrases = clips_and_phrases
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*[executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips)]), BOUND_S
        )
        assert executor.engine.name == "whisper" and executor.engine.language_problem("en") is None
    finally:
        await executor.close()
        delete_app("test-whisper")
    assert [" ".join(re.sub(r"[^a-z ]", "", r.text.lower()).split()) for r in results] == phrases


@pytest.fixture(scope="module")
def clips_and_phrases():
    from tests.speech import compose

    phrases = ["hello world", "good morning"]
    return [compose([0.2, p, 0.2]).audio for p in phrases], phrases


# --- without Ray: what the executor does while a pool is unreachable, and what the backend calls --


class AwayBackend:
    """A pool that is unreachable until `back` is set."""

    max_in_flight = 2
    max_queued_finals = 3

    def __init__(self) -> None:
        self.decoder = make_decoder()
        self.back = asyncio.Event()

    @property
    def healthy(self) -> bool:
        return self.back.is_set()

    async def decode(self, batch, lane):
        await self.back.wait()
        return self.decoder.decode(batch)

    async def run_on_engines(self, fn, between_calls=True):
        return fn(self.decoder)

    def figures(self):
        return {"backend": "away", "reachable": self.healthy}

    async def close(self) -> None:
        pass


async def test_while_the_pool_is_away_partials_are_shed_and_finals_wait_up_to_a_bound():
    backend = AwayBackend()
    executor = InferenceExecutor(backend.decoder.engines["fake"], None, 4, 0, 64, backend=backend)
    await executor.start()
    try:
        waiting = [executor.submit_final(i, 0, clip(0.5 + i / 10), DecodeOptions()) for i in range(3)]
        assert await executor.submit_partial(7, 0, clip(0.4), DecodeOptions(partial=True)) is None  # shed
        with pytest.raises(PoolUnavailable, match="inference.ray_max_queued_finals"):
            await executor.submit_final(9, 0, clip(0.9), DecodeOptions())  # refused, with the reason
        assert not executor.backend_healthy and executor.stats.partials_dropped == 1
        backend.back.set()  # the pool is back: the waiting finals are decoded, none lost
        results = await asyncio.wait_for(asyncio.gather(*waiting), BOUND_S)
        assert [r.text for r in results] == [text_of(clip(0.5 + i / 10)) for i in range(3)]
    finally:
        await executor.close()


class FlakyHandle:
    """Stands in for a Serve handle: the first `failures` calls fail as a dead replica's do."""

    def __init__(self, failures: int, error: type[BaseException] | None) -> None:
        self.failures, self.error, self.calls = failures, error, 0  # error None: the call never answers
        self.decode = self

    def remote(self, lane, work):
        self.calls += 1
        failing = self.calls <= self.failures
        decoder = make_decoder()

        async def answer():
            if failing and self.error is None:
                await asyncio.sleep(3600)
            if failing:
                raise self.error()
            return replace(decoder.decode(work), replica="r1")

        return answer()


class ShortBackoff:
    """inference.ray_backend's `asyncio`, with the pause between retries a hundred times shorter:
    six failures in a row pause 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 2.0 = 5.1 s there, and no assertion
    reads the time. Everything else (wait_for, CancelledError, ...) is asyncio's own."""

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / 100)


@pytest.mark.parametrize("failures", [1, 6])
async def test_the_backend_retries_a_call_that_failed_in_the_pool(failures, monkeypatch):
    from inference import ray_backend
    from inference.ray_backend import PoolSettings, RayBackend

    monkeypatch.setattr(ray_backend, "asyncio", ShortBackoff())
    error = ray.exceptions.ActorDiedError
    handle = FlakyHandle(failures, error)
    states: list[bool] = []
    backend = RayBackend(handle, PoolSettings(), observe=lambda o, s: states.append(backend.healthy))
    outcome = await asyncio.wait_for(backend.decode(make_work(), Lane.FINAL), BOUND_S)
    assert isinstance(outcome.results[0], DecodeResult) and handle.calls == failures + 1
    assert backend.retries == failures and backend.healthy and states == [True]  # (6: unreachable for a while)
    assert ("ActorDiedError" in backend.last_error) and (backend.lost_since is None)


async def test_a_call_unanswered_for_call_timeout_s_makes_the_pool_away_until_one_answers():
    from inference.ray_backend import PoolSettings, RayBackend

    backend = RayBackend(FlakyHandle(1, None), PoolSettings(call_timeout_s=1.0))
    call = asyncio.create_task(backend.decode(make_work(), Lane.FINAL))
    await until(lambda: not backend.healthy, BOUND_S)  # /healthz degraded; the call is retried meanwhile
    assert "TimeoutError" in backend.figures()["last_error"]
    outcome = await asyncio.wait_for(call, BOUND_S)
    assert isinstance(outcome.results[0], DecodeResult) and backend.healthy and backend.figures()["reachable"]


def make_work():
    from inference.batch_decoder import DecodeWork

    return [DecodeWork(clip(0.5), DecodeOptions(), "fake")]


def test_ray_unreachable_at_start_is_one_line_naming_the_setting():
    from inference.ray_backend import PoolSettings, connect

    with pytest.raises(PoolUnavailable, match=r"inference\.ray_address") as caught:
        connect(PoolSettings(address="127.0.0.1:1"))
    assert "\n" not in str(caught.value) and isinstance(caught.value, OSError)  # run_server prints it as one line


async def test_a_server_on_the_pool_captions_and_reports_the_pool(ray_cluster, scorer):
    # The server's own composition ([inference] backend = "ray"): it loads no engine, learns the
    # pool's; captions come back; /healthz and /metrics show the pool, and its loss.
    import aiohttp

    from tests.conftest import make_config
    from tests.server_thread import ServerThread
    from tests.speech import compose
    from tests.wsclient import finals, transcribe

    pool = {"engine": "instant", "backend": "ray", "ray_app": "test-server", "ray_num_cpus": 0.0}
    server = ServerThread(make_config(inference=pool), None, scorer).start()
    try:
        replies = await transcribe(server.url, compose([0.3, "hello world", 0.5]).audio)
        assert [r["final_text"] for r in finals(replies)] and server.server.ctx.engine_name == "instant"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.http}/healthz") as response:
                health = await response.json()
            async with http.get(f"{server.http}/metrics") as response:
                metrics = await response.text()
            assert health["status"] == "ok" and health["inference_backend"]["backend"] == "ray"
            assert "caption_pool_batch_size_bucket{" in metrics and "caption_pool_up 1.0" in metrics
            server.server.ctx.executor.backend._healthy = False  # as after five failed calls in a row
            async with http.get(f"{server.http}/healthz") as response:
                health = await response.json()
            async with http.get(f"{server.http}/metrics") as response:
                metrics = await response.text()
            assert health["status"] == "degraded" and health["inference_backend"]["reachable"] is False
            assert "caption_pool_up 0.0" in metrics
            server.server.ctx.executor.backend._healthy = True
    finally:
        server.stop()
        delete_app("test-server")


async def test_an_autoscaling_pool_deploys_within_its_bounds(ray_cluster):
    # ray_max_replicas above ray_min_replicas: Serve's autoscaling config (checked by Serve at deploy).
    from ray import serve

    from inference.ray_backend import RayBackend

    settings = pool_settings("test-autoscale", 1, 1, max_replicas_override=2)
    backend = await RayBackend.open(settings, functools.partial(make_decoder))
    try:
        config = serve.status().applications["test-autoscale"].deployments["decode"]
        assert config.status == "HEALTHY"
        outcome = await asyncio.wait_for(backend.decode(make_work(), Lane.FINAL), BOUND_S)
        assert outcome.results[0].text == text_of(clip(0.5))
    finally:
        delete_app("test-autoscale")

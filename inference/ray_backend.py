"""The decode backend on a shared pool of Ray Serve replicas ([inference] backend = "ray").

Each replica (`DecodeReplica`) holds the engines, built from the same config by the same code as a
local server (inference.batch_decoder.BatchDecoder), and decodes one batch at a time. Batches from
every front end wait in the replica in a priority queue (lane first: live finals, streaming
chunks, partials, background work; then arrival), so a live final waits at most for the batch the
replica is decoding; queued batches of one lane and engine are merged into one model call up to
the batch size. Ray's router therefore hands requests on at once (`max_ongoing_requests` is set
high), never holding them FIFO in front of a busy replica.

Streaming caches travel with each chunk (`CarriedState`): the replica returns the updated cache and
the front end keeps it, so a chunk retried on another replica after its replica died starts from
the front end's copy, which the dead replica never touched. A replica that dies mid-batch costs a
retry, not a caption: the front end resolves each request once, from the answer that arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from inference.allocator import MALLOC_ENV, operator_chose_malloc_settings, pays_in_ray_replicas
from inference.backend import PoolUnavailable
from inference.batch_decoder import BatchDecoder, BatchOutcome, CarriedState, DecodeWork, StepWork, Work
from inference.engines.base import DecodeOptions, DecodeResult
from inference.scheduler import Lane

if TYPE_CHECKING:
    from settings.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")
DecoderFactory = Callable[[], BatchDecoder]
Observer = Callable[[BatchOutcome, float], None]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Language codes whose answer (language_problem) the front end keeps from the replica at start.
_PROBE_SENTINEL = "qqq"


def build_decoder(config: Config) -> BatchDecoder:
    """The engines a local server would load (the live one, then config.jobs.engines), with ITN."""
    from inference.devices import resolve_device
    from inference.engines import create_engine
    from text.itn import InverseNormalizer

    live = create_engine(config, resolve_device(config.inference.device, config.inference.engine))
    engines = {live.name: live}
    for name in config.jobs.engines:
        if name not in engines:
            engines[name] = create_engine(config, resolve_device(config.inference.device, name), name, streaming=False)
    normalizer = InverseNormalizer()
    normalizer.warm_up()
    return BatchDecoder(engines, live.name, normalizer)


@dataclass(frozen=True)
class EngineInfo:
    """What a front end needs to know of a replica's engine without loading it."""

    name: str
    model: str
    device: str
    streaming: bool
    file_model: str
    problems: dict[str, str | None]  # language code -> language_problem(code)


class RemoteEngine:
    """An engine that lives in the pool: its name, model and device for the front end's pages, its
    language answers, and fresh streaming states (carried with each chunk). Never decodes here."""

    def __init__(self, info: EngineInfo) -> None:
        self.name, self.model, self.device, self.streaming = info.name, info.model, info.device, info.streaming
        self.file_model = info.file_model
        self._problems = info.problems

    def decode(self, audios: Sequence[npt.NDArray[np.float32]], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        raise RuntimeError(f"the {self.name} engine decodes in the Ray pool, not in this process")

    def language_problem(self, language: str) -> str | None:
        if language in self._problems:
            return self._problems[language]
        unknown = self._problems.get(_PROBE_SENTINEL)  # what the engine says of a code it does not know
        return unknown.replace(repr(_PROBE_SENTINEL), repr(language)) if unknown else None

    def on_cpu(self) -> RemoteEngine:
        return self

    def new_stream_state(self, *args: Any) -> CarriedState:
        return CarriedState(tuple(args))


def _language_codes() -> list[str]:
    codes = {"auto", _PROBE_SENTINEL}
    with contextlib.suppress(Exception):
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        codes.update(_LANGUAGE_CODES)
    with contextlib.suppress(Exception):
        from inference.engines import funasr_nano

        codes.update(funasr_nano.LANGUAGE_NAMES)
    with contextlib.suppress(Exception):
        from inference.engines.whisper import ELSEWHERE

        codes.update(ELSEWHERE)
    return sorted(codes)


@dataclass(order=True)
class _Queued:
    lane: int
    seq: int
    work: list[Work] = field(compare=False)
    future: asyncio.Future[BatchOutcome] = field(compare=False)
    arrived: float = field(compare=False, default_factory=time.monotonic)

    @property
    def engines(self) -> set[str]:
        return {w.engine for w in self.work if isinstance(w, DecodeWork)}


class DecodeReplica:
    """One Ray Serve replica: the engines, a priority queue, one decode thread (one device)."""

    def __init__(self, factory: DecoderFactory, max_batch_size: int, background_batch_size: int) -> None:
        self.decoder = factory()
        self.max_batch_size = max_batch_size
        self.background_batch_size = background_batch_size
        self.id = _replica_id()
        self._queue: list[_Queued] = []
        self._seq = itertools.count()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="decode")

    async def decode(self, lane: int, work: list[Work]) -> BatchOutcome:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._wake is None:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._decode_loop())
        queued = _Queued(lane, next(self._seq), work, loop.create_future())
        heapq.heappush(self._queue, queued)
        self._wake.set()
        return await queued.future

    async def _decode_loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._queue:
                self._wake.clear()
                continue
            taken = self._take()
            waiting = len(self._queue)
            work = [w for q in taken for w in q.work]
            started = time.monotonic()
            try:
                outcome = await loop.run_in_executor(self._thread, self.decoder.decode, work)
            except Exception as exc:  # BatchDecoder answers model failures per item; this is a bug
                for q in taken:
                    if not q.future.done():
                        q.future.set_exception(exc)
                continue
            at = 0
            for q in taken:
                part = replace(
                    outcome,
                    results=outcome.results[at : at + len(q.work)],
                    states=outcome.states[at : at + len(q.work)],
                    replica=self.id,
                    queue_s=started - q.arrived,
                    queued=waiting,
                    extra={"pid": os.getpid()},
                )
                at += len(q.work)
                if not q.future.done():  # (the caller gave up: cancelled)
                    q.future.set_result(part)

    def _take(self) -> list[_Queued]:
        """The most urgent batch, and queued batches of its lane and engine while they fit."""
        first = heapq.heappop(self._queue)
        limit = self.background_batch_size if first.lane == Lane.BACKGROUND else self.max_batch_size
        taken, size, engines = [first], len(first.work), first.engines
        for other in sorted(self._queue):
            if other.lane != first.lane or size + len(other.work) > limit or len(engines | other.engines) > 1:
                continue
            taken.append(other)
            size += len(other.work)
            engines = engines | other.engines
        for other in taken[1:]:
            self._queue.remove(other)
        heapq.heapify(self._queue)
        return taken

    async def describe(self) -> dict[str, Any]:
        codes = _language_codes()
        engines = [
            EngineInfo(
                e.name,
                e.model,
                e.device,
                e.streaming,
                e.file_model,
                {code: e.language_problem(code) for code in codes},
            )
            for e in self.decoder.engines.values()
        ]
        return {"live": self.decoder.live, "engines": engines, "replica": self.id, "pid": os.getpid()}

    async def run_on_engines(self, fn: Callable[[BatchDecoder], T], between_calls: bool = True) -> T:
        pool = self._thread if between_calls else None
        return await asyncio.get_running_loop().run_in_executor(pool, fn, self.decoder)

    async def figures(self) -> dict[str, Any]:
        return {"replica": self.id, "queued": len(self._queue), "pid": os.getpid()}


def _replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return f"pid{os.getpid()}"


# Errors of the call itself (the replica died, was restarted, or is unreachable): retried.
def _retryable() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex
    from ray.serve import exceptions as sex

    kinds: list[type[BaseException]] = [rex.RayActorError, rex.ActorUnavailableError, rex.WorkerCrashedError]
    for name in ("ObjectLostError", "RaySystemError", "GetTimeoutError"):
        if hasattr(rex, name):
            kinds.append(getattr(rex, name))
    for name in ("BackPressureError", "DeploymentUnavailableError"):
        if hasattr(sex, name):
            kinds.append(getattr(sex, name))
    return (*kinds, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class PoolSettings:
    """The [inference] ray_* settings the backend uses (settings.config holds them)."""

    address: str = ""
    app: str = "livecaption-decode"
    min_replicas: int = 1
    max_replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    max_ongoing_requests: int = 100
    target_ongoing_requests: float = 2.0
    batches_in_flight: int = 2
    call_timeout_s: float = 60.0
    max_queued_finals: int = 1000
    max_batch_size: int = 4
    background_batch_size: int = 1
    # Replicas decode Whisper on their CPU: started with glibc's settings for it (inference/allocator.py).
    replicas_keep_decode_memory: bool = False

    @classmethod
    def from_config(cls, config: Config) -> PoolSettings:
        inf = config.inference
        return cls(
            inf.ray_address,
            inf.ray_app,
            inf.ray_min_replicas,
            inf.ray_max_replicas,
            inf.ray_num_gpus,
            inf.ray_num_cpus,
            inf.ray_max_ongoing_requests,
            inf.ray_target_ongoing_requests,
            inf.ray_batches_in_flight,
            inf.ray_call_timeout_s,
            inf.ray_max_queued_finals,
            inf.max_batch_size,
            inf.background_batch_size,
            pays_in_ray_replicas(inf),
        )


def connect(settings: PoolSettings) -> bool:
    """Join the Ray cluster at settings.address, or start one on this machine when it is empty
    (loopback only). Returns whether this process started it. PoolUnavailable names the setting."""
    import ray

    address = settings.address
    if address and address != "auto":
        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:  # fail in seconds with the setting named, not after Ray's own minute of retries
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
        except (OSError, ValueError) as exc:
            raise PoolUnavailable(
                f"cannot reach Ray at {address!r} (inference.ray_address): {exc}; "
                'start the cluster, or set inference.ray_address = "" to start one here'
            ) from None
    if ray.is_initialized():  # (tests, and several front ends in one process, share one connection)
        return False
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))}
    if settings.replicas_keep_decode_memory and not operator_chose_malloc_settings():  # (inference/allocator.py)
        env.update(MALLOC_ENV)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env})
        else:
            ray.init(
                include_dashboard=False,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
                runtime_env={"env_vars": env},
            )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PoolUnavailable(
            f"cannot reach Ray at {address or 'a local start'!r} (inference.ray_address): {first}"
        ) from None
    return not address


def deploy(settings: PoolSettings, factory: DecoderFactory) -> Any:
    """The pool's Serve application (settings.app): attached to when running, deployed otherwise.
    Returns a handle to it. Waits until its replicas have loaded their engines."""
    from ray import serve

    with contextlib.suppress(Exception):
        if serve.status().applications[settings.app].status == "RUNNING":
            return serve.get_app_handle(settings.app)
    serve.start(http_options={"location": "NoServer"})  # no HTTP proxy: front ends call the handle
    scaling: dict[str, Any]
    if settings.max_replicas > settings.min_replicas:
        scaling = {
            "autoscaling_config": {
                "min_replicas": settings.min_replicas,
                "max_replicas": settings.max_replicas,
                "target_ongoing_requests": settings.target_ongoing_requests,
            }
        }
    else:
        scaling = {"num_replicas": settings.min_replicas}
    deployment = serve.deployment(
        name="decode",
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={"num_gpus": settings.num_gpus, "num_cpus": settings.num_cpus},
        health_check_period_s=2,
        **scaling,
    )(DecodeReplica)
    app = deployment.bind(factory, settings.max_batch_size, settings.background_batch_size)
    return serve.run(app, name=settings.app, route_prefix=None)


class RayBackend:
    """Sends the executor's batches to the pool; retries a batch whose replica died; keeps each
    streaming chunk's returned cache; tells /metrics what each call cost."""

    def __init__(self, handle: Any, settings: PoolSettings, observe: Observer | None = None) -> None:
        self._handle = handle
        self.settings = settings
        self.max_in_flight = max(1, settings.batches_in_flight)
        self.max_queued_finals = settings.max_queued_finals
        self._observe = observe or (lambda outcome, seconds: None)
        self._healthy = True
        self.retries = 0
        self.lost_since: float | None = None
        self.last_error = ""
        self.live = ""
        self.engines: dict[str, RemoteEngine] = {}
        self._owns_ray = False

    @classmethod
    async def open(
        cls,
        settings: PoolSettings,
        factory: DecoderFactory,
        observe: Observer | None = None,
    ) -> RayBackend:
        """Connect (or start Ray here), deploy or attach to the pool, learn its engines."""
        loop = asyncio.get_running_loop()
        owns = await loop.run_in_executor(None, connect, settings)
        handle = await loop.run_in_executor(None, deploy, settings, factory)
        backend = cls(handle, settings, observe)
        backend._owns_ray = owns
        described = await handle.describe.remote()
        backend.live = described["live"]
        backend.engines = {info.name: RemoteEngine(info) for info in described["engines"]}
        return backend

    @property
    def live_engine(self) -> RemoteEngine:
        return self.engines[self.live]

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def decode(self, batch: Sequence[Work], lane: Lane) -> BatchOutcome:
        retryable = _retryable()
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            response = self._handle.decode.remote(int(lane), list(batch))
            try:
                outcome: BatchOutcome = await asyncio.wait_for(_awaited(response), self.settings.call_timeout_s)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    response.cancel()
                raise
            except retryable as exc:
                self.retries += 1
                self.last_error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:300]
                with contextlib.suppress(Exception):
                    response.cancel()
                # More than a dead replica or two (or a call unanswered for call_timeout_s): the pool is away.
                if (attempt >= 5 or isinstance(exc, TimeoutError)) and self._healthy:
                    self._healthy, self.lost_since = False, time.monotonic()
                    log.error("inference pool unreachable (%s); partials shed, finals wait", self.last_error)
                log.warning("decode call failed (%s); retrying (attempt %d)", self.last_error, attempt + 1)
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
                continue
            if not self._healthy:
                log.warning("inference pool reachable again after %.1f s", time.monotonic() - (self.lost_since or 0))
            self._healthy, self.lost_since = True, None
            for work, state in zip(batch, outcome.states):
                # Keep the cache that came back; a retried chunk started from this copy, untouched.
                if isinstance(work, StepWork) and isinstance(work.state, CarriedState) and state is not None:
                    work.state.state = state.state
            self._observe(outcome, time.monotonic() - started)
            return outcome

    async def run_on_engines(self, fn: Callable[[BatchDecoder], T], between_calls: bool = True) -> T:
        """On one replica (the device report of the pool describes one of its replicas)."""
        result: T = await self._handle.run_on_engines.remote(fn, between_calls)
        return result

    def figures(self) -> dict[str, Any]:
        return {
            "backend": "ray",
            "app": self.settings.app,
            "reachable": self._healthy,
            "retries": self.retries,
            "last_error": self.last_error or None,
            "lost_for_s": round(time.monotonic() - self.lost_since, 1) if self.lost_since else None,
        }

    async def close(self) -> None:
        """Leave the pool running for the other front ends; stop a Ray this process started."""
        if self._owns_ray:
            await asyncio.get_running_loop().run_in_executor(None, shutdown)


def shutdown() -> None:
    import ray
    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()  # type: ignore[no-untyped-call]  # (ray.serve leaves it unannotated)
    ray.shutdown()


async def _awaited(response: Any) -> Any:
    return await response


async def open_pool(config: Config, observe: Observer | None = None) -> RayBackend:
    """The backend for [inference] backend = "ray": replicas load the engines that config names."""
    import functools

    return await RayBackend.open(PoolSettings.from_config(config), functools.partial(build_decoder, config), observe)

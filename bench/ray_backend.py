"""What the Ray pool ([inference] backend = "ray") costs and gives, beside the local executor, in one run.

    .venv/bin/python bench/ray_backend.py [--finals 200] [--segments 256] [--call-ms 40] [--item-ms 5] [--whisper 0]

1. The hop: finals one at a time through the instant engine (no model cost), local executor vs a
   pool of one replica: latency per final, ms p50/p95, and the difference (the Ray round trip).
2. Throughput: `--segments` finals at once through a stand-in device whose model call takes
   call_ms + item_ms per request with the GIL released (a GPU call, which a 2-core machine can
   overlap); local vs pools of 1 and 2 replicas (finals/s).
3. Batching in the replica: the pool's own (priority queue by lane, merging queued batches of one
   lane) against `serve.batch` (calls gathered first come first served, up to the batch size). One
   replica of the stand-in device; front end A submits a file job of --batching-segments background
   segments (8 batches in flight), front end B one live final every 150 ms meanwhile: B's final
   latency and A's job throughput, both ways.
4. With --whisper N: N real segments through the embedded Whisper base on the CPU, local vs pools
   of 1 and 2 replicas (on a machine with few cores the replicas share them: said in the output).

Ray is started here on loopback and stopped at the end. Numbers are printed, never judged.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.backend import LocalBackend  # noqa: E402
from inference.batch_decoder import BatchDecoder  # noqa: E402
from inference.engines.base import DecodeOptions, DecodeResult  # noqa: E402
from inference.executor import InferenceExecutor  # noqa: E402
from inference.ray_backend import DecodeReplica  # noqa: E402
from inference.scheduler import JOBS  # noqa: E402


class FifoReplica(DecodeReplica):
    """For comparison only: the replica with Ray Serve's own batching (`serve.batch`), which
    gathers calls first come first served, whatever their lane."""

    async def decode(self, lane: int, work: list) -> object:  # type: ignore[override]
        return await self._batched((lane, work))

    async def _gathered(self, items: list) -> list:
        loop = asyncio.get_running_loop()
        flat = [w for _lane, work in items for w in work]
        started = time.monotonic()
        outcome = await loop.run_in_executor(self._thread, self.decoder.decode, flat)
        out, at = [], 0
        for _lane, work in items:
            out.append(
                replace(
                    outcome,
                    results=outcome.results[at : at + len(work)],
                    states=outcome.states[at : at + len(work)],
                    replica=self.id,
                    queue_s=0.0,
                    extra={"started": started},
                )
            )
            at += len(work)
        return out


def _fifo_class(batch: int) -> type:
    from ray import serve

    class Fifo(FifoReplica):
        # Counted in calls: in this comparison every call holds one request (a final or a file segment).
        @serve.batch(max_batch_size=batch, batch_wait_timeout_s=0.01)
        async def _batched(self, items: list) -> list:
            return await self._gathered(items)

    return Fifo


class DeviceEngine:
    """Stands in for a model on an accelerator: a call costs call_ms + item_ms per request, and the
    thread waits (GIL released) as it would on the GPU."""

    name, model, device = "device", "stand-in device (fixed call time)", "cpu"
    file_model, streaming = model, False

    def __init__(self, call_ms: float, item_ms: float) -> None:
        self.call_s, self.item_s = call_ms / 1000, item_ms / 1000

    def decode(self, audios, options):
        time.sleep(self.call_s + self.item_s * len(audios))
        return [DecodeResult(f"speech {len(a) / 16000:.2f} s") for a in audios]

    def language_problem(self, language):
        return None

    def on_cpu(self):
        return self


def instant_decoder() -> BatchDecoder:
    from inference.engines.instant import InstantEngine

    return BatchDecoder({"instant": InstantEngine()}, "instant")


def device_decoder(call_ms: float, item_ms: float) -> BatchDecoder:
    return BatchDecoder({"device": DeviceEngine(call_ms, item_ms)}, "device")


def whisper_decoder() -> BatchDecoder:
    from inference.engines.whisper import WhisperEngine
    from settings.config import load

    return BatchDecoder({"whisper": WhisperEngine(load().whisper, "cpu")}, "whisper")


async def executor_for(
    factory, replicas: int, app: str, batch: int, in_flight: int, background_batch: int | None = None
) -> InferenceExecutor:
    """replicas == 0: the local backend in this process; else a pool of that many replicas."""
    if replicas == 0:
        decoder = factory()
        backend = LocalBackend(decoder)
        engine = decoder.engines[decoder.live]
    else:
        from inference.ray_backend import PoolSettings, RayBackend

        settings = PoolSettings(
            app=app,
            min_replicas=replicas,
            max_replicas=replicas,
            num_cpus=0,
            batches_in_flight=in_flight,
            max_batch_size=batch,
            background_batch_size=background_batch or batch,
        )
        backend = await RayBackend.open(settings, factory)
        engine = backend.live_engine
    executor = InferenceExecutor(
        engine, None, batch, 10, 64, backend=backend, background_batch_size=background_batch or batch
    )
    await executor.start()
    return executor


def drop_app(app: str) -> None:
    from ray import serve

    serve.delete(app)


async def hop(finals: int) -> None:
    audio = [np_zeros(16000 + i) for i in range(finals)]
    rows = {}
    for name, replicas in (("local", 0), ("ray, 1 replica", 1)):
        executor = await executor_for(instant_decoder, replicas, "bench-hop", 1, 1)
        for i in range(10):  # warm-up: connections, first calls
            await executor.submit_final(i, 0, audio[i], DecodeOptions())
        took = []
        for i, clip in enumerate(audio):
            began = time.perf_counter()
            await executor.submit_final(i, 1, clip, DecodeOptions())
            took.append((time.perf_counter() - began) * 1000)
        await executor.close()
        if replicas:
            drop_app("bench-hop")
        rows[name] = took
    print(f"\n1. per final, one at a time, instant engine ({finals} finals; ms)")
    print(f"   {'backend':<18} {'p50':>7} {'p95':>7}")
    for name, took in rows.items():
        print(f"   {name:<18} {pct(took, 50):7.2f} {pct(took, 95):7.2f}")
    local, remote = rows["local"], rows["ray, 1 replica"]
    print(f"   {'Ray hop':<18} {pct(remote, 50) - pct(local, 50):7.2f} {pct(remote, 95) - pct(local, 95):7.2f}")


async def throughput(title: str, factory, clips, batch: int, in_flight: int) -> None:
    print(f"\n{title}")
    print(f"   {'backend':<18} {'finals/s':>9} {'seconds':>8} {'batches':>8}")
    for name, replicas in (("local", 0), ("ray, 1 replica", 1), ("ray, 2 replicas", 2)):
        executor = await executor_for(factory, replicas, f"bench-{replicas}", batch, in_flight)
        await asyncio.gather(*[executor.submit_final(i, 0, c, DecodeOptions()) for i, c in enumerate(clips[:batch])])
        began = time.perf_counter()
        results = await asyncio.gather(*[executor.submit_final(i, 1, c, DecodeOptions()) for i, c in enumerate(clips)])
        took = time.perf_counter() - began
        batches = executor.stats.batches - 1
        await executor.close()
        if replicas:
            drop_app(f"bench-{replicas}")
        assert len(results) == len(clips)
        print(f"   {name:<18} {len(clips) / took:9.1f} {took:8.2f} {batches:8d}")


def deploy_with(cls: type, app: str, factory, batch: int) -> None:
    from ray import serve

    deployment = serve.deployment(
        name="decode", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0}
    )(cls)
    serve.run(deployment.bind(factory, batch, batch), name=app, route_prefix=None)  # background merged as GPU config


async def batching(factory, clips, batch: int) -> None:
    print(
        f"\n3. one replica, stand-in device, batch {batch}: front end A sends a file job of {len(clips)} "
        "segments (8 batches in flight), front end B a live final every 150 ms meanwhile"
    )
    print(f"   {'replica batching':<28} {'B final p50':>11} {'p95':>7} {'max (ms)':>9} {'A job finals/s':>15}")
    for name, cls in (("own (priority queue by lane)", DecodeReplica), ("serve.batch (FIFO)", _fifo_class(batch))):
        deploy_with(cls, "bench-batching", factory, batch)
        files = await executor_for(factory, 1, "bench-batching", batch, 8, background_batch=1)
        live = await executor_for(factory, 1, "bench-batching", batch, 2, background_batch=1)
        await live.submit_final(0, 0, clips[0], DecodeOptions())  # warm-up
        began = time.perf_counter()
        job = [files.submit_background(c, DecodeOptions(), source=JOBS) for c in clips]
        finished: list[float] = []
        job_done = asyncio.ensure_future(asyncio.gather(*job))
        job_done.add_done_callback(lambda _, end=finished: end.append(time.perf_counter()))
        took = []
        for i in range(20):
            at = time.perf_counter()
            await live.submit_final(i, 1, clips[i], DecodeOptions())
            took.append((time.perf_counter() - at) * 1000)
            await asyncio.sleep(0.15)
        await job_done
        job_s = finished[0] - began
        await files.close()
        await live.close()
        drop_app("bench-batching")
        print(f"   {name:<28} {pct(took, 50):11.1f} {pct(took, 95):7.1f} {max(took):9.1f} {len(clips) / job_s:15.1f}")


def np_zeros(n: int):
    import numpy as np

    return np.zeros(n, np.float32)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace) -> None:
    from inference.ray_backend import PoolSettings, connect, shutdown

    began = time.perf_counter()
    connect(PoolSettings())
    print(f"Ray started on loopback in {time.perf_counter() - began:.1f} s; {os.cpu_count()} CPU cores here")
    try:
        await hop(args.finals)
        clips = [np_zeros(16000 * 2 + i) for i in range(args.segments)]
        device = functools.partial(device_decoder, args.call_ms, args.item_ms)
        await throughput(
            f"2. {args.segments} finals at once, stand-in device ({args.call_ms:g} ms + {args.item_ms:g} ms per "
            f"request per call, GIL released), batch {args.batch}, {args.in_flight} batches in flight per front end",
            device,
            clips,
            args.batch,
            args.in_flight,
        )
        await batching(device, clips[: args.batching_segments], args.batch)
        if args.whisper:
            from tests.speech import compose

            phrases = ["hello world", "good morning everyone", "please open the door", "thank you very much"]
            speech = [compose([0.2, phrases[i % len(phrases)], 0.3]).audio for i in range(args.whisper)]
            await throughput(
                f"4. {args.whisper} finals at once, embedded Whisper base on the CPU, batch {args.batch} "
                f"({os.cpu_count()} cores shared by every replica)",
                whisper_decoder,
                speech,
                args.batch,
                args.in_flight,
            )
    finally:
        shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finals", type=int, default=200, help="finals for the hop latency")
    parser.add_argument("--segments", type=int, default=256, help="finals at once for throughput")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--in-flight", type=int, default=2, help="batches in flight per front end (pool)")
    parser.add_argument("--call-ms", type=float, default=40.0, help="stand-in device: ms per model call")
    parser.add_argument("--item-ms", type=float, default=5.0, help="stand-in device: ms per request in a call")
    parser.add_argument("--batching-segments", type=int, default=128, help="file job size for part 3")
    parser.add_argument("--whisper", type=int, default=0, help="also N real segments through Whisper base")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()

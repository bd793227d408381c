"""Load harness: N paced real-time streams against a real server process over loopback.

    .venv/bin/python bench/load.py --engine instant --streams 1 50 100 200 400 --vad-batch 1 256
    .venv/bin/python bench/load.py --engine whisper --streams 1 2 4
    .venv/bin/python bench/load.py --streams 200 --noise-dbfs -45     # hiss above the energy gate
    .venv/bin/python bench/load.py --streams 400 --loops 4 --ramp-s 20  # more than fit: newcomers get "busy"
    python3 bench/load.py --engine whisper --streams 1 16 64 --devices cuda cpu  # GPU vs CPU, side by side

The server runs as its own process (`run_server.py` with a generated config); the clients run in
this process, each sending an espeak-ng script with known phrase boundaries in 100 ms chunks paced
to the wall clock (a chunk leaves when its audio has been spoken, as from a microphone). Every run
is bounded in time. Reported per run:
- lag: how far behind real time the server processed audio (server histogram, /metrics)
- end of speech -> final caption p50/p95/p99, from the moment the speaker stopped (what a user
  sees; it includes the client's own chunking, up to one chunk)
- the server's own share of it (srv95): from the arrival of the chunk holding the speech end to
  the final, minus queue and decode - the silence rule, FSMN look-ahead, batching and lag; its
  floor is silence_ms. srvS95: the same on the server's clock (the final's endpoint_ms +
  final_ms - queue_ms - decode_ms), without the clients' own receive delay. Then queue (waiting
  for the model) and decode (the model call) p95
- partial cadence (median gap between partials of a stream)
- server CPU % (of one core) and RSS, RSS per connection
- with --devices: each stream count once per inference.device (a CUDA run batches --gpu-batch
  requests per model call, as config.toml advises for a GPU; the CPU run keeps config.toml's)
- finals expected / received / duplicated (lost or duplicated must be 0); a run is cut off 60 s
  after the script ends, and finals missing then are late (an overloaded server). Streams the
  server turned away as busy (vad_overload_ms) are counted apart and not expected
The `instant` engine (fixed text, no recognition; a benchmark engine) isolates the server's own
cost; `whisper` shows the real total on the embedded model.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import websockets  # noqa: E402

from tests.speech import compose, to_pcm16  # noqa: E402

CHUNK_MS = 100
DEADLINE_AFTER_SCRIPT_S = 60
SERVER_ENV = dict(item.split("=", 1) for item in os.environ.get("LOAD_SERVER_ENV", "").split() if "=" in item)
SCRIPT = [0.6, "hello world", 0.8, "good morning everyone", 1.0, "please open the door", 0.9]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, overrides: dict[str, str]) -> None:
    """config.toml with `overrides` ({"key": value} for a key in one section only, or
    {"section.key": value}: [cluster] has a max_connections too)."""
    text = (ROOT / "config.toml").read_text()
    for name, value in overrides.items():
        section, _, key = name.rpartition(".")
        start = text.index(f"\n[{section}]\n") if section else 0
        end = text.find("\n[", start + 1) if section else len(text)
        end = len(text) if end < 0 else end
        part, count = re.subn(rf"(?m)^{key} = [^#\n]*", f"{key} = {value} ", text[start:end])
        assert count == 1, name
        text = text[:start] + part + text[end:]
    path.write_text(text)


class ServerProcess:
    def __init__(self, engine: str, vad_batch: int, streams: int, extra: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        config = Path(self.dir.name, "config.toml")
        write_config(
            config,
            {
                "engine": f'"{engine}"',
                "vad_max_batch_size": str(vad_batch),
                "server.max_connections": str(max(64, streams + 8)),
                "max_connections_per_ip": "0",  # every client of the benchmark is on loopback
                "db_path": f'"{self.dir.name}/captions.db"',
                "upload_dir": f'"{self.dir.name}/uploads"',
                **(extra or {}),
            },
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "run_server.py"),
                "--config",
                str(config),
                "--port",
                str(self.port),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env={**os.environ, **SERVER_ENV},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.get("/healthz")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read().decode()) from None
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
            return response.read().decode()

    def pids(self) -> list[int]:
        """The server and its children (the VAD worker process)."""
        return with_children(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids())

    def rss_mib(self) -> float:
        total = 0.0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                pass
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


def with_children(pid: int) -> list[int]:
    """`pid` and the processes it started (a server's VAD worker; PostgreSQL's backends)."""
    children = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    return [pid] + [child for child in children if (_stat_fields(child) or [0, 0])[1] == str(pid)]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU the processes have used so far (those still running)."""
    fields = [f for f in map(_stat_fields, pids) if f]
    return sum(int(f[11]) + int(f[12]) for f in fields) / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def histogram_quantiles(metrics: str, name: str, qs=(0.5, 0.95, 0.99)) -> list[float]:
    buckets = []
    for line in metrics.splitlines():
        match = re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line)
        if match:
            buckets.append((float(match.group(1)), float(match.group(2))))
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in qs:
        bound = next((le for le, count in buckets if total and count >= q * total), float("nan"))
        out.append(bound)
    return out


async def stream(
    url: str, index: int, chunks: list[bytes], spans_ms: list[tuple[float, float]], start_at: float, results: list
) -> None:
    sent_at: list[float] = []
    finals, partial_times = [], []
    # Filled as replies come, so a stream cut off at the deadline still reports what it got.
    entry = {"finals": finals, "partial_times": partial_times, "refused": False}
    results.append(entry)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    async with websockets.connect(url, subprotocols=["binary"], ping_interval=None, max_size=None) as ws:
        try:
            await _captions(ws, index, chunks, spans_ms, sent_at, finals, partial_times)
        except websockets.ConnectionClosed:
            if ws.close_code != 1013:  # 1013: turned away as busy (vad_overload_ms), counted apart
                raise
            entry["refused"] = True


async def _captions(ws, index, chunks, spans_ms, sent_at, finals, partial_times) -> None:
    await ws.send(
        json.dumps(
            {
                "mode": "2pass",
                "wav_name": f"s{index}",
                "wav_format": "pcm",
                "audio_fs": 16000,
                "is_speaking": True,
                "extra_replies": True,
                "chunk_size": [5, 10, 5],
                "chunk_interval": 10,
            }
        )
    )

    began = time.monotonic()  # wall time of the script's first sample, as a microphone hears it

    async def send() -> None:
        # Like a microphone: a chunk leaves once all of its audio has been spoken.
        for i, chunk in enumerate(chunks):
            await asyncio.sleep(max(0.0, began + (i + 1) * CHUNK_MS / 1000 - time.monotonic()))
            sent_at.append(time.monotonic())
            await ws.send(chunk)
        await ws.send(json.dumps({"is_speaking": False}))

    sender = asyncio.create_task(send())
    try:
        await _replies(ws, began, spans_ms, sent_at, finals, partial_times)
        await sender
    finally:
        sender.cancel()  # a refused stream's sender fails or is still waiting to send
        await asyncio.gather(sender, return_exceptions=True)


async def _replies(ws, began, spans_ms, sent_at, finals, partial_times) -> None:
    async for raw in ws:
        reply = json.loads(raw)
        now = time.monotonic()
        if reply.get("type") == "partial":
            partial_times.append(now)
        elif reply.get("type") == "final":
            # The speaker stopped at span_end of stream time. The server's own share starts
            # when the chunk holding that moment arrived: the client's chunking is not its doing.
            span_end = min(spans_ms, key=lambda s: abs(s[1] - reply["end_ms"]))[1]
            holding = min(len(sent_at) - 1, max(0, math.ceil(span_end / CHUNK_MS) - 1))
            finals.append(
                {
                    **reply,
                    "latency_ms": (now - began) * 1000 - span_end,
                    "server_ms": (now - sent_at[holding]) * 1000,
                }
            )
        if reply.get("is_final"):
            break


async def run_clients(url: str, count: int, script, ramp_s: float = 0.0) -> list[dict]:
    pcm = to_pcm16(script.audio)
    step = 16000 * CHUNK_MS // 1000 * 2
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    spans_ms = [(a / 16, b / 16) for a, b in script.spans]
    begin = time.monotonic() + 0.5
    results: list[dict] = []
    # Default: every stream starts within the first second (50 start times, 20 ms apart); with
    # ramp_s, one after another, evenly over that many seconds.
    starts = [begin + (i * ramp_s / count if ramp_s else (i % 50) * 0.02) for i in range(count)]
    tasks = [stream(url, i, chunks, spans_ms, starts[i], results) for i in range(count)]
    # Bounded: whatever has not arrived this long after the script ended counts as late.
    done, pending = await asyncio.wait(
        [asyncio.create_task(t) for t in tasks], timeout=len(script.audio) / 16000 + ramp_s + DEADLINE_AFTER_SCRIPT_S
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    return results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def one_run(
    engine: str,
    vad_batch: int,
    count: int,
    script,
    overrides: dict[str, str] | None = None,
    ramp_s: float = 0.0,
    services: Callable[[], list[int]] = list,
) -> dict:
    """`services`: the processes of what the server uses (Redis, PostgreSQL), looked up once it has
    started (PostgreSQL's backends are its connections); their CPU is reported as services_cpu_s."""
    server = ServerProcess(engine, vad_batch, count, overrides)
    try:
        idle_rss = server.rss_mib()
        service_pids = services()
        services_before = cpu_seconds(service_pids)
        cpu_before, wall_before = server.cpu_seconds(), time.monotonic()
        client_before = sum(os.times()[:2])
        peak = {"rss": idle_rss}

        async def main():
            async def sample():
                while True:
                    peak["rss"] = max(peak["rss"], server.rss_mib())
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(sample())
            try:
                return await run_clients(server.url, count, script, ramp_s)
            finally:
                sampler.cancel()

        results = asyncio.run(main())
        wall = time.monotonic() - wall_before
        cpu_s = server.cpu_seconds() - cpu_before
        services_cpu_s = cpu_seconds(service_pids) - services_before
        cpu = cpu_s / wall * 100
        client_cpu = (sum(os.times()[:2]) - client_before) / wall * 100
        metrics = server.get("/metrics")
    finally:
        server.stop()
    finals = [f for r in results for f in r["finals"]]
    refused = sum(r["refused"] for r in results)
    expected = (count - refused) * len(script.spans)
    duplicates = sum(len(r["finals"]) - len({f["segment_id"] for f in r["finals"]}) for r in results)
    latency = [f["latency_ms"] for f in finals]
    # The server's own share: from the arrival of the speech end to the final, except waiting for
    # and running the model (the silence rule's silence_ms is part of it).
    endpoint = [f["server_ms"] - f.get("queue_ms", 0) - f.get("decode_ms", 0) for f in finals]
    # The same share on the server's clock (its own fields): not counting the clients' receive delay.
    by_server = [
        f["endpoint_ms"] + f["final_ms"] - f.get("queue_ms", 0) - f.get("decode_ms", 0)
        for f in finals
        if "endpoint_ms" in f
    ]
    lag = histogram_quantiles(metrics, "caption_stream_lag_seconds")
    gaps = [b - a for r in results for a, b in zip(r["partial_times"], r["partial_times"][1:]) if b - a < 2.0]
    return {
        "engine": engine,
        "vad_batch": vad_batch,
        "streams": count,
        "lag_ms": [x * 1000 for x in lag],
        "latency_ms": [pct(latency, q) for q in (0.5, 0.95, 0.99)],
        "endpoint_p95": pct(endpoint, 0.95),
        "server_clock_p95": pct(by_server, 0.95),
        "queue_p95": pct([f.get("queue_ms", 0) for f in finals], 0.95),
        "decode_p50": pct([f.get("decode_ms", 0) for f in finals], 0.5),
        "decode_p95": pct([f.get("decode_ms", 0) for f in finals], 0.95),
        "partial_gap_ms": statistics.median(gaps) * 1000 if gaps else float("nan"),
        "cpu": cpu,
        "cpu_s": cpu_s,
        "wall_s": wall,
        "services_cpu_s": services_cpu_s,
        "client_cpu": client_cpu,
        "rss": peak["rss"],
        "rss_per_conn_kib": (peak["rss"] - idle_rss) * 1024 / count,
        "finals": (expected, len(finals), duplicates),
        "refused": refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="instant", choices=["instant", "whisper"])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 50, 100, 200])
    parser.add_argument("--vad-batch", type=int, nargs="+", default=[256], help="vad_max_batch_size per run")
    parser.add_argument("--loops", type=int, default=1, help="play the script this many times per stream (longer runs)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a config.toml setting, e.g. vad_max_wait_ms=10"
    )
    parser.add_argument(
        "--noise-dbfs", type=float, default=None, help="add background noise at this RMS level, e.g. -45 (gate: -50)"
    )
    parser.add_argument("--ramp-s", type=float, default=0.0, help="start the streams evenly over this many seconds")
    parser.add_argument(
        "--devices", nargs="+", default=[], help="run each stream count once per inference.device, e.g. cuda cpu"
    )
    parser.add_argument("--gpu-batch", type=int, default=16, help="max_batch_size of the CUDA runs (--devices)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    devices = args.devices or [""]  # "" = inference.device as config.toml and --set say
    script = compose(SCRIPT * args.loops)
    if args.noise_dbfs is not None:
        # A room: steady hiss under the speech and in the pauses (the script's pauses are otherwise
        # digital silence, below the energy gate, which settles them without FSMN).
        noise = np.random.default_rng(0).normal(0, 10 ** (args.noise_dbfs / 20), len(script.audio))
        script = dataclasses.replace(script, audio=(script.audio + noise).astype(np.float32))
    noise = "digital silence between phrases" if args.noise_dbfs is None else f"noise at {args.noise_dbfs:g} dBFS"
    print(
        f"script {len(script.audio) / 16000:.1f} s, {len(script.spans)} phrases per stream ({noise}), "
        f"{CHUNK_MS} ms chunks; "
        f"clients in this process, server in its own; server CPU % (with its VAD worker) is of one core (2 cores here)"
    )
    header = (
        f"{'engine':>8} {'device':>6} {'vadB':>4} {'streams':>7} | {'lag p50/p95/p99 ms':>20} | "
        f"{'final p50/p95/p99 ms':>22} | {'srv95':>6} {'srvS95':>6} {'queue95':>7} {'dec50':>6} {'dec95':>6} | "
        f"{'partial':>7} | "
        f"{'cpu%':>5} {'cli%':>4} {'rssMiB':>6} {'KiB/conn':>8} | finals exp/got/dup"
    )
    print(header)
    for vad_batch in args.vad_batch:
        for count in args.streams:
            for device in devices:
                r = one_run(
                    args.engine,
                    vad_batch,
                    count,
                    script,
                    {**overrides, **device_settings(device, args.gpu_batch)},
                    args.ramp_s,
                )
                lag = "/".join(f"{x:.0f}" for x in r["lag_ms"])
                lat = "/".join(f"{x:.0f}" for x in r["latency_ms"])
                print(
                    f"{r['engine']:>8} {device or '-':>6} {vad_batch:>4} {count:>7} | {lag:>20} | {lat:>22} | "
                    f"{r['endpoint_p95']:>6.0f} {r['server_clock_p95']:>6.0f} {r['queue_p95']:>7.0f} "
                    f"{r['decode_p50']:>6.0f} {r['decode_p95']:>6.0f} | {r['partial_gap_ms']:>7.0f} | "
                    f"{r['cpu']:>5.0f} {r['client_cpu']:>4.0f} {r['rss']:>6.0f} {r['rss_per_conn_kib']:>8.0f} | "
                    f"{'/'.join(map(str, r['finals']))}" + (f" (busy: {r['refused']})" if r["refused"] else ""),
                    flush=True,
                )


def device_settings(device: str, gpu_batch: int) -> dict[str, str]:
    if not device:
        return {}
    settings = {"inference.device": f'"{device}"'}
    if device.startswith("cuda"):
        settings |= {"max_batch_size": str(gpu_batch), "background_batch_size": str(gpu_batch)}
    return settings


if __name__ == "__main__":
    main()

"""Fairness: a paced live client's end-of-speech -> final latency alone, and beside greedy neighbours.

    .venv/bin/python bench/fairness.py                      # embedded Whisper, every scenario
    .venv/bin/python bench/fairness.py --scenarios alone openai alone fast alone jobs alone

One server process per scenario (run_server.py, embedded Whisper unless --engine), one live client
streaming bench/load.py's espeak script in real time (100 ms chunks, 2pass, like a microphone), and
beside it:
- alone:  nothing else
- openai: one long file (--minutes of /work/shared/audio/jfk.wav looped) on /v1/audio/transcriptions
- fast:   a WebSocket sending that file at 20x real time
- jobs:   4 jobs (that file each) running on the batch queue (jobs.concurrent_files = 4)
A scenario named `NAME@MS` runs with inference.background_hold_ms = MS (`fast@0`: background work
does not wait for live speech to pause, as before that setting), for both policies in one sitting.
The neighbour starts first and is given --head-start-s to fill the queues; it is cut off (the HTTP
client disconnects, the socket closes) when the live script ends, so every run is bounded in time.
Printed per scenario: the live client's final latency p50/p95 (from the speaker stopping to the
final, as bench/load.py measures it), then where its finals' time went, p95 of each: endpointing
(from the arrival of the speech end to the segment closing: silence_ms plus any speech-detection
delay), waiting for the model (queue) and the model call (decode); the p95 ratio to `alone` (the
median of the `alone` runs: name it more than once on a shared, noisy machine), the decode
requests answered meanwhile (the live client's own are about the `alone` figure; the rest is the
neighbour's work: it is slowed, not starved), and the machine's load average over the last minute
when the scenario ended (2 cores: above 2, other work shared them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import websockets  # noqa: E402

from bench.load import SCRIPT, ServerProcess, pct, run_clients  # noqa: E402
from tests.speech import compose  # noqa: E402

SHARED_AUDIO = ROOT.parent / "shared" / "audio" / "jfk.wav"
FAST_FACTOR = 20  # the greedy WebSocket sends this many seconds of audio per second
SCENARIOS = ("alone", "openai", "fast", "jobs")


def long_file(folder: Path, minutes: float, speech: Path) -> Path:
    """`minutes` of real speech: jfk.wav looped (its pauses give segments of 1.5-5.6 s)."""
    with wave.open(str(speech)) as w:
        pcm = w.readframes(w.getnframes())
    repeats = max(1, round(minutes * 60 / 11.0))
    path = folder / f"jfk-x{repeats}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm * repeats)
    return path


async def openai_neighbour(http: str, path: Path) -> None:
    form = aiohttp.FormData()
    form.add_field("file", path.read_bytes(), filename=path.name)
    form.add_field("model", "whisper-1")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.post(f"{http}/v1/audio/transcriptions", data=form) as response:
            await response.read()


async def fast_neighbour(url: str, path: Path, counts: dict) -> None:
    with wave.open(str(path)) as w:
        pcm = w.readframes(w.getnframes())
    step = 3200  # 100 ms
    async with websockets.connect(url, ping_interval=None, max_size=None) as ws:
        start = {"mode": "2pass", "wav_name": "greedy", "wav_format": "pcm", "audio_fs": 16000}
        await ws.send(json.dumps({**start, "is_speaking": True, "extra_replies": True, "chunk_size": [5, 10, 5]}))

        async def read() -> None:
            async for raw in ws:
                if json.loads(raw).get("type") == "final":
                    counts["fast finals"] = counts.get("fast finals", 0) + 1

        reader = asyncio.create_task(read())
        began = time.monotonic()
        try:
            for i, offset in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(0.0, began + i * 0.1 / FAST_FACTOR - time.monotonic()))
                await ws.send(pcm[offset : offset + step])
            await ws.send(json.dumps({"is_speaking": False}))
            await reader
        finally:
            reader.cancel()


async def jobs_neighbour(http: str, path: Path, counts: dict) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(4):
            form = aiohttp.FormData()
            form.add_field("file", path.read_bytes(), filename=path.name)
            async with session.post(f"{http}/api/jobs", data=form) as response:
                assert response.status in (200, 201, 202), await response.text()
        await asyncio.Event().wait()  # the jobs run on in the server until it stops


def decode_requests(server: ServerProcess) -> float:
    """Decode requests answered so far (the batch-size histogram's sum for kind="decode")."""
    found = re.search(r'^caption_batch_size_sum\{kind="decode"\} (\S+)$', server.get("/metrics"), re.M)
    return float(found.group(1)) if found else 0.0


def scenario(tag: str) -> str:
    """`NAME` or `NAME@HOLD_MS` (argparse type): checked here, split in run_scenario."""
    name, _, hold_ms = tag.partition("@")
    if name not in SCENARIOS or not (hold_ms == "" or hold_ms.isdigit()):
        raise argparse.ArgumentTypeError(f"{tag!r}: one of {', '.join(SCENARIOS)}, optionally @HOLD_MS")
    return tag


def run_scenario(tag: str, args, script, path: Path) -> dict:
    name, _, hold_ms = tag.partition("@")
    overrides = {"concurrent_files": "4", **({"background_hold_ms": hold_ms} if hold_ms else {})}
    server = ServerProcess(args.engine, 256, 2, overrides)
    counts: dict = {}
    try:

        async def main():
            neighbour = None
            if name == "openai":
                neighbour = asyncio.create_task(openai_neighbour(f"http://127.0.0.1:{server.port}", path))
            elif name == "fast":
                neighbour = asyncio.create_task(fast_neighbour(server.url, path, counts))
            elif name == "jobs":
                neighbour = asyncio.create_task(jobs_neighbour(f"http://127.0.0.1:{server.port}", path, counts))
            if neighbour is not None:
                await asyncio.sleep(args.head_start_s)
            before = decode_requests(server)
            try:
                results = await run_clients(server.url, 1, script)
            finally:
                if neighbour is not None:
                    neighbour.cancel()  # the neighbour's client goes away
                    await asyncio.gather(neighbour, return_exceptions=True)
            return results, decode_requests(server) - before

        results, decoded = asyncio.run(main())
    finally:
        server.stop()
    finals = [f for r in results for f in r["finals"]]
    latency = [f["latency_ms"] for f in finals]
    return {
        "name": tag,
        "p50": pct(latency, 0.5),
        "p95": pct(latency, 0.95),
        "endpoint95": pct([f.get("endpoint_ms", 0) for f in finals], 0.95),
        "queue95": pct([f.get("queue_ms", 0) for f in finals], 0.95),
        "decode95": pct([f.get("decode_ms", 0) for f in finals], 0.95),
        "finals": (len(script.spans), len(finals)),
        "decodes": round(decoded),  # the live client's finals and partials, and background work
        **counts,
        "load": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default="whisper", choices=["whisper", "instant"])
    parser.add_argument("--loops", type=int, default=4, help="the live script this many times (3 phrases each)")
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the neighbours' file")
    parser.add_argument("--head-start-s", type=float, default=3.0, help="the neighbour runs this long first")
    parser.add_argument("--speech", type=Path, default=SHARED_AUDIO, help="16 kHz mono WAV to loop")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), type=scenario, metavar="NAME[@HOLD_MS]")
    args = parser.parse_args()
    script = compose(SCRIPT * args.loops)
    with tempfile.TemporaryDirectory() as tmp:
        path = long_file(Path(tmp), args.minutes, args.speech)
        with wave.open(str(path)) as w:
            file_s = w.getnframes() / 16000
        print(
            f"live: {len(script.audio) / 16000:.0f} s script, {len(script.spans)} phrases, paced, 2pass; "
            f"neighbours' file: {file_s:.0f} s of jfk.wav looped; engine {args.engine}; "
            f"head start {args.head_start_s:g} s",
            flush=True,
        )
        header = (
            f"{'beside':>10} | {'final p50/p95 ms':>17} | {'endpoint/queue/decode p95':>25} | {'p95/alone':>9} | "
            f"{'finals':>6} | other"
        )
        print(header, flush=True)
        runs = []
        for name in args.scenarios:
            runs.append(run_scenario(name, args, script, path))
            print(_row(runs[-1], runs), flush=True)
        if len(runs) > 1:
            print("\nside by side (ratios to the median alone p95):\n" + header)
            for r in sorted(runs, key=lambda r: SCENARIOS.index(r["name"].partition("@")[0])):
                print(_row(r, runs))


def _row(r: dict, runs: list[dict]) -> str:
    alone = statistics.median([a["p95"] for a in runs if a["name"] == "alone"] or [float("nan")])
    shown = ("name", "p50", "p95", "endpoint95", "queue95", "decode95", "finals")
    extra = {k: v for k, v in r.items() if k not in shown}
    stages = f"{r['endpoint95']:>7.0f} /{r['queue95']:>7.0f} /{r['decode95']:>7.0f}"
    return (
        f"{r['name']:>10} | {r['p50']:>7.0f} /{r['p95']:>7.0f} | {stages:>25} | {r['p95'] / alone:>9.2f} | "
        f"{r['finals'][1]:>2}/{r['finals'][0]:<3} | {extra}"
    )


if __name__ == "__main__":
    main()

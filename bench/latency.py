"""End of speech -> final caption latency for N paced streams, split into endpointing and decode.

    .venv/bin/python bench/latency.py --streams 1 20

Each stream is an espeak-ng lecture script sent in real time (100 ms chunks) to a server running
in this process on loopback with config.toml defaults. End of speech is the moment the chunk
holding the last speech sample of a sentence is sent; latency runs from there to the final
caption's arrival. `decode_ms` (server-reported: segment closed -> text ready) is the decode
share; the rest (silence_ms, FSMN look-ahead, chunking, transport) is the endpointing share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_thread import ServerThread  # noqa: E402
from tests.speech import compose, to_pcm16  # noqa: E402
from tests.wsclient import START, connect  # noqa: E402

SENTENCES = [
    "welcome to the lecture on computer networks",
    "today we talk about packets and routers",
    "please write down your questions",
]
CHUNK_MS = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_stream(url: str, index: int, script) -> list[dict]:
    await asyncio.sleep(index * 0.137)  # streams do not start in lockstep
    pcm = to_pcm16(script.audio)
    step = 16000 * CHUNK_MS // 1000 * 2
    sent_at: list[float] = []
    samples: list[dict] = []
    async with await connect(url) as ws:
        await ws.send(json.dumps({**START, "wav_name": f"s{index}"}))

        async def sender():
            began = time.monotonic()
            for i, offset in enumerate(range(0, len(pcm), step)):
                await asyncio.sleep(max(0.0, began + i * CHUNK_MS / 1000 - time.monotonic()))
                sent_at.append(time.monotonic())
                await ws.send(pcm[offset : offset + step])
            await ws.send(json.dumps({"is_speaking": False}))

        task = asyncio.create_task(sender())
        async for raw in ws:
            reply = json.loads(raw)
            if reply.get("type") == "final":
                received = time.monotonic()
                segment = min(script.spans, key=lambda s: abs(s[1] / 16 - reply["end_ms"]))
                chunk = segment[1] // (step // 2)
                speech_end = sent_at[chunk] if chunk < len(sent_at) else sent_at[-1]
                total = (received - speech_end) * 1000
                samples.append({"total_ms": total, "decode_ms": reply["decode_ms"], "text": reply["final_text"]})
            if reply.get("is_final"):
                break
        await task
    return samples


async def run(url: str, streams: int) -> list[dict]:
    parts: list = [0.5]
    for sentence in SENTENCES:
        parts += [sentence, 1.2]
    script = compose(parts)
    results = await asyncio.gather(*[one_stream(url, i, script) for i in range(streams)])
    return [sample for stream in results for sample in stream]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 20])
    args = parser.parse_args()
    from inference.engines.whisper import WhisperEngine
    from inference.vad_fsmn import FsmnScorer
    from tests.conftest import make_config

    config = make_config()
    engine, scorer = WhisperEngine(config.whisper, "cpu"), FsmnScorer()
    print(
        f"config: silence_ms={config.endpointing.silence_ms} max_batch={config.inference.max_batch_size} "
        f"partial_interval_ms={config.inference.partial_interval_ms}; engine {engine.model} on cpu"
    )
    print(
        f"{'streams':>7} {'finals':>6} {'p50 ms':>8} {'p95 ms':>8} {'endpoint p50':>13} {'decode p50':>11} "
        f"{'decode p95':>11}"
    )
    for count in args.streams:
        server = ServerThread(make_config(), engine, scorer).start()
        try:
            samples = asyncio.run(run(server.url, count))
        finally:
            server.stop()
        totals = [s["total_ms"] for s in samples]
        decodes = [s["decode_ms"] for s in samples]
        endpoint = [s["total_ms"] - s["decode_ms"] for s in samples]
        print(
            f"{count:>7} {len(samples):>6} {statistics.median(totals):>8.0f} {percentile(totals, 0.95):>8.0f} "
            f"{statistics.median(endpoint):>13.0f} {statistics.median(decodes):>11.0f} "
            f"{percentile(decodes, 0.95):>11.0f}"
        )


if __name__ == "__main__":
    main()

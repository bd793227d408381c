"""Stream PCM to the caption server over the FunASR-compatible WebSocket protocol; yield replies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from websockets.typing import Subprotocol

ACCEPTED_RATES = (8000, 16000, 22050, 44100, 48000)


@dataclass
class StreamOptions:
    mode: str = "2pass"
    chunk_ms: int = 100
    realtime: bool = True  # pace chunks like a live microphone; False = as fast as possible
    wav_name: str = "stream"
    hotwords: str = ""
    language: str | None = None
    itn: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"silence_ms": 500}


def load_audio(path: str) -> tuple[np.ndarray, int]:
    """Any file libsndfile reads (wav, flac, ogg, mp3) -> mono float32 at a rate the server accepts."""
    import soundfile

    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate not in ACCEPTED_RATES:
        import soxr

        audio, rate = soxr.resample(audio, rate, 16000).astype(np.float32), 16000
    return audio, rate


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()


def start_message(options: StreamOptions, rate: int) -> dict[str, Any]:
    message = {
        "mode": options.mode,
        "chunk_size": [5, 10, 5],
        "chunk_interval": 10,
        "wav_name": options.wav_name,
        "wav_format": "pcm",
        "audio_fs": rate,
        "is_speaking": True,
        "extra_replies": True,  # the ready reply (with the session id) and warnings
        "hotwords": options.hotwords,
        "itn": options.itn,
    }
    if options.language:
        message["language"] = options.language
    message.update(options.extra)
    return message


async def stream_pcm(url: str, pcm: bytes, rate: int, options: StreamOptions) -> AsyncIterator[dict[str, Any]]:
    """Send one stream and yield every reply until the end reply (is_final true)."""
    async with websockets.connect(url, subprotocols=[Subprotocol("binary")], max_size=None, ping_interval=None) as ws:
        await ws.send(json.dumps(start_message(options, rate)))
        sender = asyncio.create_task(_send_audio(ws, pcm, rate, options))
        try:
            async for raw in ws:
                reply = json.loads(raw)
                reply["_received"] = time.monotonic()
                yield reply
                if reply.get("is_final"):
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)


async def _send_audio(ws, pcm: bytes, rate: int, options: StreamOptions) -> None:
    step = rate * options.chunk_ms // 1000 * 2
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(pcm), step)):
        if options.realtime:
            # Pace against the wall clock, not by sleeping a fixed amount, so lag never accumulates.
            delay = started + index * options.chunk_ms / 1000 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await ws.send(pcm[offset : offset + step])
    await ws.send(json.dumps({"is_speaking": False}))

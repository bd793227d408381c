"""Small WebSocket helpers for server tests (real sockets, the `websockets` client)."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import websockets

from tests.speech import to_pcm16

START = {
    "mode": "2pass",
    "chunk_size": [5, 10, 5],
    "chunk_interval": 10,
    "wav_name": "test",
    "wav_format": "pcm",
    "audio_fs": 16000,
    "is_speaking": True,
    "extra_replies": True,
    "hotwords": "",
    "itn": True,
}


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


async def connect(url: str, path: str = "/"):
    return await websockets.connect(url + path, subprotocols=["binary"], ping_interval=None, max_size=None)


async def recv(ws, timeout: float = 60) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def start(ws, **overrides) -> dict:
    await ws.send(json.dumps({**START, **overrides}))
    ready = await recv(ws)
    assert ready["type"] == "ready", ready
    return ready


async def send_audio(ws, audio: np.ndarray, rate: int = 16000, chunk_ms: int = 100, realtime: bool = False) -> None:
    pcm = to_pcm16(audio)
    step = rate * chunk_ms // 1000 * 2
    loop = asyncio.get_running_loop()
    began = loop.time()
    for index, offset in enumerate(range(0, len(pcm), step)):
        if realtime:
            await asyncio.sleep(max(0.0, began + index * chunk_ms / 1000 - loop.time()))
        await ws.send(pcm[offset : offset + step])


async def until_end(ws, timeout: float = 120) -> list[dict]:
    """Every reply up to and including the end reply (is_final true)."""
    replies = []
    while True:
        reply = await recv(ws, timeout)
        replies.append(reply)
        if reply.get("is_final"):
            return replies


async def transcribe(
    url: str, audio: np.ndarray, rate: int = 16000, realtime: bool = False, path: str = "/", **overrides
) -> list[dict]:
    async with await connect(url, path) as ws:
        await start(ws, audio_fs=rate, **overrides)
        sender = asyncio.create_task(send_audio(ws, audio, rate, realtime=realtime))
        replies_task = asyncio.create_task(until_end(ws))
        await sender
        await ws.send(json.dumps({"is_speaking": False}))
        return await replies_task


def finals(replies: list[dict]) -> list[dict]:
    return [r for r in replies if r.get("type") == "final"]


def final_words(replies: list[dict]) -> str:
    return words(" ".join(r["final_text"] for r in finals(replies)))


async def until(condition, timeout: float = 60.0) -> None:
    """Wait until condition() (or the coroutine it returns) is true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)

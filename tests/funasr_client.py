"""A client that behaves like FunASR's runtime/python/websocket/funasr_wss_client.py.

Written from its documented behaviour (not copied): same connection options, first message,
chunk pacing (stride = 60 * chunk_size[1] / chunk_interval ms of audio per send), end message with
`is_end`, the wait for an acknowledgement carrying is_final, and its way of printing replies:
`online`/`2pass-online` text is appended, `2pass-offline` text is appended to the offline
transcript and replaces the online one, `offline` text is appended and marks the stream done.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import websockets


@dataclass
class FunasrResult:
    text_print: str = ""
    offline_text: str = ""
    messages: list[dict] = field(default_factory=list)
    acknowledgement: dict | None = None


async def run_funasr_client(
    url: str,
    pcm: bytes,
    mode: str,
    sample_rate: int = 16000,
    hotword: str = "",
    chunk_interval: int = 10,
    send_without_sleep: bool = True,
) -> FunasrResult:
    chunk_size = [5, 10, 5]
    result = FunasrResult()
    done = asyncio.Queue()
    async with websockets.connect(url, subprotocols=["binary"], ping_interval=None) as ws:

        async def receive():
            text_2pass_online = ""
            try:
                while True:
                    meg = json.loads(await ws.recv())
                    result.messages.append(meg)
                    text = meg["text"]  # the real client reads it from every message
                    if meg.get("is_end"):
                        done.put_nowait(meg)
                    if "mode" not in meg:
                        continue
                    if meg["mode"] == "online":
                        result.text_print += text
                    elif meg["mode"] == "offline":
                        result.text_print += text
                    elif meg["mode"] == "2pass-online":
                        text_2pass_online += text
                        result.text_print = result.offline_text + text_2pass_online
                    else:
                        text_2pass_online = ""
                        result.text_print = result.offline_text + text
                        result.offline_text += text
            except websockets.ConnectionClosed:
                done.put_nowait({"is_end": True, "is_final": False, "error": "closed"})

        receiver = asyncio.create_task(receive())
        await ws.send(
            json.dumps(
                {
                    "mode": mode,
                    "chunk_size": chunk_size,
                    "chunk_interval": chunk_interval,
                    "encoder_chunk_look_back": 4,
                    "decoder_chunk_look_back": 0,
                    "audio_fs": sample_rate,
                    "wav_name": "demo",
                    "wav_format": "pcm",
                    "is_speaking": True,
                    "hotwords": hotword,
                    "itn": True,
                },
                ensure_ascii=False,
            )
        )
        stride = int(60 * chunk_size[1] / chunk_interval / 1000 * sample_rate * 2)
        for beg in range(0, len(pcm), stride):
            await ws.send(pcm[beg : beg + stride])
            pause = 0.001 if send_without_sleep or mode == "offline" else 60 * chunk_size[1] / chunk_interval / 1000
            await asyncio.sleep(pause)
        await ws.send(json.dumps({"is_speaking": False, "is_end": True}))
        result.acknowledgement = await asyncio.wait_for(done.get(), 120)
        receiver.cancel()
    return result

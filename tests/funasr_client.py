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
    chunk_size: tuple[int, int, int] = (5, 10, 5),
    use_itn: bool = True,
    wav_format: str = "pcm",
) -> FunasrResult:
    """`pcm` is what the client sends: PCM16 samples, or a whole file's bytes with wav_format
    "others" (its newest version, for files that are neither .wav nor .pcm). `hotword` is the
    string it puts in the message: a file's "word weight" lines become '{"word": weight}' (its
    microphone path) or "word1,word2" (its file path); anything else is sent as given."""
    chunk_size = list(chunk_size)
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
                    "wav_format": wav_format,
                    "is_speaking": True,
                    "hotwords": hotword,
                    "itn": use_itn,
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


@dataclass
class Html5Result:
    """What FunASR's HTML5 page shows (its text area) and every reply it got."""

    shown: str = ""
    messages: list[dict] = field(default_factory=list)
    stopped_on_final: bool = False  # file mode: the page closes the socket on the first is_final reply


async def run_html5_client(
    url: str,
    data: bytes,
    mode: str,
    file_ext: str | None = None,
    file_sample_rate: int = 16000,
    hotwords: dict[str, int] | None = None,
    use_itn: bool = False,
    origin: str | None = None,
    close_after_s: float = 3.0,
) -> Html5Result:
    """A client that sends exactly what FunASR's runtime/html5 page (main.js, wsconnecter.js) sends.

    Written from its behaviour, not copied. Microphone (file_ext None): `data` is 16 kHz PCM16 sent
    in 960-sample frames, then the stop message, which repeats the configuration with
    is_speaking false; the page closes the socket 3 s later whatever it has received (tests wait
    longer, `close_after_s`: how fast the last final comes is a latency question for bench/, not a
    pass/fail on a shared CI machine). File
    (file_ext "wav", "mp3", ...): mode offline, wav_format "PCM" plus the file's rate for WAV (whose
    bytes, header included, are sent as PCM) or the extension otherwise, the file's bytes in 960-byte
    pieces, then the stop message; the page closes the socket on the first is_final reply.
    What it shows: `2pass-offline`/`offline` text appended to the offline transcript (which replaces
    the screen), any other mode's text appended to the screen."""
    result = Html5Result()
    file_mode = file_ext is not None
    asr_mode = "offline" if file_mode else mode
    request = {"chunk_size": [5, 10, 5], "wav_name": "h5", "is_speaking": True, "chunk_interval": 10,
               "itn": use_itn, "mode": asr_mode}  # fmt: skip
    if file_mode:
        request["wav_format"] = file_ext
        if file_ext == "wav":
            request["wav_format"], request["audio_fs"] = "PCM", file_sample_rate
    if hotwords:
        request["hotwords"] = json.dumps(hotwords, ensure_ascii=False)
    stop = {"chunk_size": [5, 10, 5], "wav_name": "h5", "is_speaking": False, "chunk_interval": 10, "mode": asr_mode}
    headers = {"Origin": origin} if origin else None
    async with websockets.connect(url, additional_headers=headers, ping_interval=None, max_size=None) as ws:
        await ws.send(json.dumps(request))
        piece = 960 if file_mode else 960 * 2
        began = asyncio.get_running_loop().time()
        for index, offset in enumerate(range(0, len(data), piece)):
            if not file_mode:  # a microphone: 960 samples leave every 60 ms
                await asyncio.sleep(max(0.0, began + index * 0.06 - asyncio.get_running_loop().time()))
            await ws.send(data[offset : offset + piece])
        await ws.send(json.dumps(stop))
        offline_text = ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (120 if file_mode else close_after_s)
        try:
            while (left := deadline - loop.time()) > 0:
                message = json.loads(await asyncio.wait_for(ws.recv(), left))
                result.messages.append(message)
                text = "" + str(message.get("text"))
                if message.get("mode") in ("2pass-offline", "offline"):
                    offline_text += text
                    result.shown = offline_text
                else:
                    result.shown += text
                if message.get("is_final") is True:  # nothing follows it
                    result.stopped_on_final = file_mode
                    break
        except (TimeoutError, websockets.ConnectionClosed):
            pass
    return result

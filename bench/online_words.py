"""What FunASR clients see in `online` mode while someone speaks: how many words, how early, how many wrong.

    .venv/bin/python bench/online_words.py                      # partial cadence 800 ms (default) vs 400 ms
    .venv/bin/python bench/online_words.py --intervals 800 --files ../shared/audio/jfk.wav

FunASR's clients append `text` of every online reply and never take anything back. Our partials
put in `text` only words two consecutive re-decodes of the open segment agreed on (see
streaming/stabilizer.py), and the final adds what is left. For each recording, streamed paced in
real time as a FunASR client (no `extra_replies`), against a real server on loopback with the
embedded Whisper model, this prints:
- early: share of the transcript's words that were on screen before their segment's final
- lead p50: how long before the segment's final such a word appeared (s)
- wrong: early words that the final does not have at that position (FunASR clients cannot take
  them back; the final's remainder is appended after them)
- words: the transcript's length; wer: the appended transcript against the finals alone
Runs are bounded: each recording once per interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import soundfile  # noqa: E402
import websockets  # noqa: E402

from tests.speech import compose, to_pcm16  # noqa: E402
from tests.wer import word_error_rate  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
CHUNK_MS = 100


def _words(text: str) -> list[str]:
    return [w for w in "".join(c.lower() if c.isalnum() else " " for c in text).split()]


async def stream(url: str, pcm: bytes, interval_ms: int) -> list[tuple[float, dict]]:
    replies: list[tuple[float, dict]] = []
    async with websockets.connect(url, subprotocols=["binary"], ping_interval=None, max_size=None) as ws:
        await ws.send(json.dumps({"mode": "online", "wav_name": "bench", "audio_fs": 16000, "is_speaking": True,
                                  "chunk_size": [5, 10, 5], "chunk_interval": 10,
                                  "partial_interval_ms": interval_ms}))  # fmt: skip

        async def receive():
            while True:
                reply = json.loads(await ws.recv())
                replies.append((time.monotonic(), reply))
                if reply.get("is_final"):
                    return

        receiver = asyncio.create_task(receive())
        step = 16000 * CHUNK_MS // 1000 * 2
        began = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, began + (index + 1) * CHUNK_MS / 1000 - time.monotonic()))
            await ws.send(pcm[offset : offset + step])
        await ws.send(json.dumps({"is_speaking": False}))
        await asyncio.wait_for(receiver, 120)
    return replies


def measure(replies: list[tuple[float, dict]]) -> dict:
    shown: dict[int, list[tuple[float, str]]] = {}  # segment -> words appended by partials, with times
    early = wrong = total = 0
    leads: list[float] = []
    appended, finals = [], []
    for at, reply in replies:
        words = _words(reply.get("text", ""))
        appended += words
        if reply.get("type") == "partial":
            shown.setdefault(reply["segment_id"], []).extend((at, w) for w in words)
        elif reply.get("type") == "final" or reply.get("segment_id") is not None:
            final_words = _words(reply.get("final_text", ""))
            finals += final_words
            before = shown.get(reply["segment_id"], [])
            total += len(final_words)
            early += len(before)
            leads += [at - t for t, _ in before]
            wrong += sum(1 for i, (_, w) in enumerate(before) if i >= len(final_words) or final_words[i] != w)
    return {"early": early / total if total else 0.0, "lead": statistics.median(leads) if leads else 0.0,
            "wrong": wrong, "words": total, "wer": word_error_rate(" ".join(finals), " ".join(appended))}  # fmt: skip


def recordings(files: list[str]) -> dict[str, bytes]:
    out = {}
    for name in files:
        audio, rate = soundfile.read(name, dtype="float32")
        assert rate == 16000, f"{name}: 16 kHz mono expected"
        out[Path(name).name] = to_pcm16(audio)
    script = [0.5, "the quick brown fox jumps over the lazy dog", 0.7, "please open the door and close the window", 0.8]
    out["espeak"] = to_pcm16(compose(script).audio)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intervals", type=int, nargs="+", default=[800, 400], help="partial_interval_ms values")
    parser.add_argument("--files", nargs="+", default=[str(AUDIO / "jfk.wav"), str(AUDIO / "two_speakers_phone.wav")])
    args = parser.parse_args()

    from inference.engines.whisper import WhisperEngine
    from inference.vad_fsmn import FsmnScorer
    from settings import config as config_module
    from tests.conftest import make_config
    from tests.server_thread import ServerThread

    server = ServerThread(make_config(), WhisperEngine(config_module.load().whisper, "cpu"), FsmnScorer()).start()
    try:
        print(
            f"{'recording':>24} {'interval':>8} | {'early':>6} {'lead p50 s':>10} {'wrong':>5} {'words':>5} {'wer':>5}"
        )
        for name, pcm in recordings(args.files).items():
            for interval in args.intervals:
                m = measure(asyncio.run(stream(server.url, pcm, interval)))
                print(f"{name:>24} {interval:>8} | {m['early']:>6.0%} {m['lead']:>10.2f} {m['wrong']:>5} "
                      f"{m['words']:>5} {m['wer']:>5.2f}")  # fmt: skip
    finally:
        server.stop()


if __name__ == "__main__":
    main()

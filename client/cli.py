"""Caption a file or a microphone with the caption server.

python -m client.cli lecture.wav                 # paced like a live microphone
python -m client.cli lecture.mp3 --fast --srt lecture.srt
python -m client.cli --mic                       # needs `pip install sounddevice`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from client.srt import timestamp, to_srt
from client.stream import StreamOptions, load_audio, start_message, stream_pcm, to_pcm16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="livecaption-client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("audio", nargs="?", help="audio file (wav, flac, ogg, mp3)")
    parser.add_argument("--mic", action="store_true", help="caption the default microphone until Ctrl-C")
    parser.add_argument("--url", default="ws://127.0.0.1:10095", help="server address")
    parser.add_argument("--mode", default="2pass", choices=["2pass", "online", "offline"])
    parser.add_argument("--fast", action="store_true", help="send the file as fast as possible")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per WebSocket frame")
    parser.add_argument("--hotwords", default="", help='"word word" or \'{"word": 20}\'')
    parser.add_argument("--language", default=None, help="language code, e.g. en")
    parser.add_argument("--srt", type=Path, help="write the final captions as SubRip subtitles")
    args = parser.parse_args(argv)
    if bool(args.audio) == args.mic:
        parser.error("give an audio file or --mic (not both)")
    if not 10 <= args.chunk_ms <= 2000:
        parser.error("--chunk-ms must be between 10 and 2000")
    return args


class Printer:
    """Partials rewrite one line in place (on a terminal); finals are printed as lines."""

    def __init__(self, stream=sys.stdout) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.finals: list[dict] = []

    def show(self, reply: dict) -> None:
        kind = reply.get("type")
        if kind == "partial" and self.live:
            line = f"{reply['stable']} \x1b[2m{reply['unstable']}\x1b[0m".strip()
            self.stream.write(f"\r\x1b[K{line}")
        elif kind == "final":
            self.finals.append(reply)
            prefix = "\r\x1b[K" if self.live else ""
            span = f"[{timestamp(reply['start_ms'])} --> {timestamp(reply['end_ms'])}]"
            self.stream.write(f"{prefix}{span} {reply['final_text']}\n")
        elif kind == "end" and reply.get("mode") == "offline":
            self.finals.extend({**s, "type": "final"} for s in reply.get("segments", []))
            for segment in reply.get("segments", []):
                self.stream.write(
                    f"[{timestamp(segment['start_ms'])} --> {timestamp(segment['end_ms'])}] {segment['final_text']}\n"
                )
        elif kind == "error":
            print(f"server error ({reply['code']}): {reply['message']}", file=sys.stderr)
        self.stream.flush()


async def caption_file(args: argparse.Namespace, printer: Printer) -> None:
    audio, rate = load_audio(args.audio)
    options = StreamOptions(
        mode=args.mode,
        chunk_ms=args.chunk_ms,
        realtime=not args.fast,
        wav_name=Path(args.audio).name,
        hotwords=args.hotwords,
        language=args.language,
    )
    async for reply in stream_pcm(args.url, to_pcm16(audio), rate, options):
        printer.show(reply)


async def caption_microphone(args: argparse.Namespace, printer: Printer) -> None:
    try:
        import sounddevice
    except ImportError:
        raise SystemExit("--mic needs sounddevice: pip install sounddevice") from None
    import websockets
    from websockets.typing import Subprotocol

    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[bytes] = asyncio.Queue()
    options = StreamOptions(mode=args.mode, wav_name="microphone", hotwords=args.hotwords, language=args.language)
    blocksize = 16000 * args.chunk_ms // 1000

    def on_audio(data, _frames, _time, _status) -> None:
        loop.call_soon_threadsafe(frames.put_nowait, bytes(data))

    async with websockets.connect(args.url, subprotocols=[Subprotocol("binary")], ping_interval=None) as ws:
        await ws.send(json.dumps(start_message(options, 16000)))

        async def send() -> None:
            with sounddevice.RawInputStream(
                samplerate=16000, channels=1, dtype="int16", blocksize=blocksize, callback=on_audio
            ):
                try:
                    while True:
                        await ws.send(await frames.get())
                except asyncio.CancelledError:
                    await ws.send(json.dumps({"is_speaking": False}))

        sender = asyncio.create_task(send())
        try:
            async for raw in ws:
                reply = json.loads(raw)
                printer.show(reply)
                if reply.get("is_final"):
                    break
        except asyncio.CancelledError:
            sender.cancel()
            raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    printer = Printer()
    try:
        asyncio.run(caption_microphone(args, printer) if args.mic else caption_file(args, printer))
    except KeyboardInterrupt:
        pass
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.srt:
            args.srt.write_text(to_srt(printer.finals), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

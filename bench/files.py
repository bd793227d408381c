"""Real-time factor of file transcription with the embedded model: 1 file vs N files at once
(their segments share decode batches), same server, same audio, one run.

    .venv/bin/python bench/files.py                 # 1 vs 8 files of ~45 s speech each
    .venv/bin/python bench/files.py --files 8 --phrases 12

RTF = wall time / audio time (lower is faster); throughput = audio seconds per wall second.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import aiohttp  # noqa: E402
import numpy as np  # noqa: E402
from load import ServerProcess  # noqa: E402

from tests.speech import compose, write_wav  # noqa: E402

PHRASES = ["good morning everyone", "please open the door", "thank you very much", "thank you all for coming"]


async def run_job(http: str, paths: list[Path]) -> float:
    form = aiohttp.FormData()
    for path in paths:
        form.add_field("file", path.read_bytes(), filename=path.name)
    async with aiohttp.ClientSession() as session:
        began = time.monotonic()
        async with session.post(f"{http}/api/jobs", data=form) as response:
            job_id = (await response.json())["job_id"]
        while True:
            async with session.get(f"{http}/api/jobs/{job_id}") as response:
                job = await response.json()
            if job["status"] == "done":
                return time.monotonic() - began
            await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--phrases", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        parts: list = [0.3]
        for i in range(args.phrases):
            parts += [PHRASES[i % len(PHRASES)], 0.6]
        audio = compose(parts).audio
        seconds = len(audio) / 16000
        # Each file gets a few samples of different silence at the end: identical uploads would be
        # recognised as duplicates and transcribed once.
        paths = [
            write_wav(Path(tmp) / f"file{i}.wav", np.concatenate([audio, np.zeros(i + 1, np.float32)]))
            for i in range(args.files)
        ]
        server = ServerProcess("whisper", 256, 8)
        try:
            http = f"http://127.0.0.1:{server.port}"
            asyncio.run(run_job(http, paths[-1:]))  # warm-up: first model calls are slower
            one = asyncio.run(run_job(http, paths[:1]))
            many = asyncio.run(run_job(http, paths))
        finally:
            server.stop()
    print(f"audio per file {seconds:.1f} s ({args.phrases} segments)")
    print(f"1 file : {one:6.1f} s wall  RTF {one / seconds:.3f}  throughput {seconds / one:.2f} audio-s/s")
    total = seconds * args.files
    print(f"{args.files} files: {many:6.1f} s wall  RTF {many / total:.3f}  throughput {total / many:.2f} audio-s/s"
          f"  ({one * args.files / many:.2f}x the 1-file rate)")  # fmt: skip


if __name__ == "__main__":
    main()

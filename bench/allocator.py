"""A Whisper decode's time with glibc's malloc defaults and with inference/allocator.py's settings,
side by side in one run (each in a fresh process: glibc takes them at a process's start).

    .venv/bin/python bench/allocator.py [--rounds 3] [--piece-s 4]

The real recordings (../shared/audio) are cut into pieces of --piece-s seconds, as live segments are,
and decoded one at a time through the server's engine (default [whisper] settings) on a thread of
its own, as the executor's decode thread does. Prints, per setting: decode p50 and mean, the CPU
time in user space and in the kernel, minor page faults per decode, and the peak resident size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUDIO = ROOT.parent / "shared" / "audio"
RECORDINGS = ("jfk.wav", "two_speakers_phone.wav")
SETTINGS = ("glibc defaults", "reuse freed memory")


def measure(setting: str, rounds: int, piece_s: float) -> dict:
    """In this (fresh) process: apply `setting`, then decode every piece `rounds` times."""
    sys.path.insert(0, str(ROOT))
    from inference.allocator import reuse_freed_memory

    applied = reuse_freed_memory() if setting == SETTINGS[1] else False
    import soundfile as sf

    from inference.engines.base import DecodeOptions
    from inference.engines.whisper import WhisperEngine
    from settings.config import load

    engine = WhisperEngine(load().whisper, "cpu")
    step = round(piece_s * 16000)
    pieces = []
    for name in RECORDINGS:
        audio, _ = sf.read(AUDIO / name, dtype="float32")
        pieces += [audio[i : i + step] for i in range(0, len(audio) - step // 2, step)]
    times: list[float] = []

    def decode_all() -> None:  # on a thread of its own, as the executor's decode thread
        for _ in range(rounds):
            for piece in pieces:
                began = time.perf_counter()
                engine.decode([piece], [DecodeOptions(language="en")])
                times.append(time.perf_counter() - began)

    before = resource.getrusage(resource.RUSAGE_SELF)
    thread = threading.Thread(target=decode_all)
    thread.start()
    thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "applied": applied,
        "decodes": len(times),
        "p50_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "faults_per_decode": (after.ru_minflt - before.ru_minflt) / len(times),
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="times each piece is decoded")
    parser.add_argument("--piece-s", type=float, default=4.0, help="length of the pieces decoded (seconds)")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rounds, args.piece_s)))
        return
    sys.path.insert(0, str(ROOT))
    from inference.allocator import operator_chose_malloc_settings

    env = {k: v for k, v in os.environ.items() if not operator_chose_malloc_settings({k: v})}
    print(f"{'setting':<20} | decode p50 / mean | user s | kernel s | faults/decode | peak RSS")
    for setting in SETTINGS:
        child = ["--child", setting, "--rounds", str(args.rounds), "--piece-s", str(args.piece_s)]
        run = subprocess.run(
            [sys.executable, __file__, *child],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{setting:<20} | {r['p50_s']:.3f} / {r['mean_s']:.3f} s | {r['user_s']:6.1f} | {r['sys_s']:8.1f} | "
            f"{r['faults_per_decode']:13,.0f} | {r['peak_rss_mb']:.0f} MB"
            f"   ({r['decodes']} decodes, applied: {r['applied']})"
        )


if __name__ == "__main__":
    main()

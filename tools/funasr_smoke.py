"""Smoke test of the funasr engine with the real models: downloads them (first run) and transcribes.

    .venv/bin/python tools/funasr_smoke.py                 # the example wav shipped with paraformer-zh
    .venv/bin/python tools/funasr_smoke.py lecture.wav     # any 16 kHz mono wav
    .venv/bin/python tools/funasr_smoke.py --config my.toml --device cuda

It runs exactly what the server runs for one segment: the offline model (+ punctuation, ITN) and the
streaming model chunk by chunk, and prints both texts with their timings. Needs network access to
ModelScope the first time (or the models already in funasr.model_cache_dir / local directories).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.engines.base import DecodeOptions  # noqa: E402
from inference.engines.funasr import FunasrEngine  # noqa: E402
from inference.model_hub import ModelUnavailable, resolve_model_dir  # noqa: E402
from settings import config as config_module  # noqa: E402
from text.itn import InverseNormalizer  # noqa: E402


def example_wav(settings) -> Path:
    model_dir = resolve_model_dir(
        settings.offline_model, "offline_model", settings.hub, settings.model_cache_dir, settings.allow_download
    )
    found = sorted(model_dir.glob("example/*.wav"))
    if not found:
        raise SystemExit(f"no example wav in {model_dir}/example; pass a wav file")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wav", nargs="?", help="16 kHz mono wav (default: the model's example)")
    parser.add_argument("--config", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hotwords", default="", help="space-separated hotwords for the offline model")
    args = parser.parse_args(argv)
    settings = config_module.load(args.config).funasr
    try:
        started = time.perf_counter()
        engine = FunasrEngine(settings, args.device)
        took = time.perf_counter() - started
        print(f"loaded {engine.model} ({engine.offline_class}) on {args.device} in {took:.1f} s")
        wav = Path(args.wav) if args.wav else example_wav(settings)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    audio, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    if rate != 16000:
        print(f"error: {wav} is {rate} Hz; the smoke test takes 16 kHz", file=sys.stderr)
        return 1
    audio = np.ascontiguousarray(audio.mean(axis=1))
    hotwords = tuple((w, 20) for w in args.hotwords.split())
    itn = InverseNormalizer()

    started = time.perf_counter()
    final = engine.decode([audio], [DecodeOptions(hotwords=hotwords)])[0]
    print(f"offline  ({time.perf_counter() - started:.2f} s for {len(audio) / 16000:.1f} s): {final.text}")
    if not final.extra.get("itn_done"):
        print(f"with ITN: {itn(final.text, 'zh')}")
    if engine.streaming:
        state, chunk, partial = engine.new_stream_state((5, 10, 5)), 9600, DecodeOptions(partial=True)
        started = time.perf_counter()
        for offset in range(0, len(audio) - chunk + 1, chunk):
            engine.stream([(state, audio[offset : offset + chunk], False, partial)])
        text = engine.stream([(state, audio[len(audio) // chunk * chunk :], True, DecodeOptions())])[0].text
        print(f"streaming ({time.perf_counter() - started:.2f} s, 600 ms chunks): {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

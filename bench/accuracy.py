"""Accuracy of live captions against the same model on the whole file, and per-word latency.

    .venv/bin/python bench/accuracy.py                      # default settings, 1 and 4 streams
    .venv/bin/python bench/accuracy.py --streams 1 --set whisper.context_s=0   # compare a setting

Each clip is streamed in real time (100 ms chunks paced to the wall clock, as from a microphone)
through a real server on loopback with the embedded Whisper base and the real FSMN VAD, with
default settings unless --set says otherwise. For each clip it prints:
- WER of the live finals against the reference text, and of a whole-file decode of the same model
  (the ceiling; files over 20 s are decoded window by window on Whisper's timestamps). For
  two_speakers_phone.wav, which has no word reference, the words published transcripts agree on
  (tests/corpus.py PHONE_TEXT: two short spans in it are uncertain).
- words lost / doubled at cuts: deletions and insertions within 2 words of a join
  between two finals of which the first was cut (for length, or at a long segment's short pause)
- captions with a phrase repeated more than twice
- per-word latency: word end in the audio (whole-file decode with word timestamps) -> the word
  first on the client (partial or final), and -> the word in a final
With --streams 4 every clip is played by 4 clients at once (latency is then what each sees).
The clients run in this process, so their CPU competes with the server's; numbers are noisy on a
shared machine: compare settings side by side, in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inference.allocator import reuse_freed_memory  # noqa: E402

# The server's decodes as run_server.py sets them up, before numpy starts a thread
# (inference/allocator.py). MALLOC_ARENA_MAX=0 in the environment measures glibc's defaults instead.
REUSING_FREED_MEMORY = reuse_freed_memory()

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from streaming.events import CUT_REASONS  # noqa: E402
from tests.corpus import JFK_TEXT as JFK  # noqa: E402
from tests.corpus import MONOLOGUE, PHONE_TEXT, SHORT  # noqa: E402
from tests.speech import compose  # noqa: E402
from tests.wer import normalise  # noqa: E402
from tests.wsclient import connect, send_audio, start  # noqa: E402
from text.repeats import collapse_repeats  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    reference: str | None  # None: the whole-file decode is the reference


def clips(only: str = "", audio_dir: Path = AUDIO) -> list[Clip]:
    """The clips whose name contains `only`, made only when chosen, so a machine without espeak-ng
    can run the recordings alone (--only .wav). A monologue's name gives its length once made:
    choose it by "monologue" or its voice."""
    out = []
    for name, ref in (("jfk.wav", JFK), ("two_speakers_phone.wav", PHONE_TEXT)):
        if only in name and (audio_dir / name).is_file():
            out.append(Clip(name, sf.read(audio_dir / name, dtype="float32")[0], ref))
    for voice in ("en-us", "en-gb-x-rp"):
        name = f"espeak short phrases ({voice})"
        if only in name:
            script = compose([0.5, *SHORT], voice=voice)
            out.append(Clip(name, script.audio, " ".join(script.texts)))
    for voice, rate in (("en-us", 150), ("en-gb", 140)):
        if only in f"espeak monologue ({voice})":
            script = compose([0.3, MONOLOGUE, 0.5], rate_wpm=rate, voice=voice)
            out.append(Clip(f"espeak monologue {len(script.audio) / 16000:.0f} s ({voice})", script.audio, MONOLOGUE))
    return out


def align(ref: list[str], hyp: list[str]) -> list[tuple[str, int, int]]:
    """Levenshtein alignment as (op, ref index, hyp index); op in = (match) s d i."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    ops, i, j = [], n, m
    while i or j:
        if i and j and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "s", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            ops.append(("d", i - 1, j))
            i -= 1
        else:
            ops.append(("i", i, j - 1))
            j -= 1
    return ops[::-1]


def wer(ref: list[str], hyp: list[str]) -> float:
    return sum(op != "=" for op, _, _ in align(ref, hyp)) / max(1, len(ref))


async def play(url: str, audio: np.ndarray, t0_holder: list) -> list[tuple[float, dict]]:
    """Stream in real time; every reply with its arrival time relative to the audio's start."""
    got: list[tuple[float, dict]] = []
    async with await connect(url) as ws:
        await start(ws)
        began = time.monotonic()
        t0_holder.append(began)

        async def receive():
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 300))
                got.append((time.monotonic() - began, reply))
                if reply.get("is_final"):
                    return

        receiver = asyncio.create_task(receive())
        await send_audio(ws, audio, realtime=True)
        await ws.send(json.dumps({"is_speaking": False}))
        await receiver
    return got


def analyse(replies: list[tuple[float, dict]], ref: list[str], word_ends: list[float]):
    finals = [(t, r) for t, r in replies if r.get("type") == "final"]
    hyp, joins, seg_of_word, final_time = [], [], [], []
    for t, r in finals:
        words = normalise(r["final_text"])
        hyp += words
        seg_of_word += [r["segment_id"]] * len(words)
        final_time += [t] * len(words)
        if r.get("end_reason") in CUT_REASONS:
            joins.append(len(hyp))  # the next final continues speech cut here (for length, or at a short pause)
    # first shown: the earliest reply of the word's segment that already showed that many words
    shown: dict[int, list[tuple[float, int]]] = {}
    for t, r in replies:
        if r.get("type") == "partial":
            n = len(normalise(f"{r.get('stable', '')} {r.get('unstable', '')}"))
            shown.setdefault(r["segment_id"], []).append((t, n))
    offsets, first_seen = {}, []
    for k, seg in enumerate(seg_of_word):
        offsets.setdefault(seg, k)
        position = k - offsets[seg]
        early = [t for t, n in shown.get(seg, []) if n > position]
        first_seen.append(min(early + [final_time[k]]))
    ops = align(ref, hyp)
    lost = doubled = 0
    for op, _, j in ops:
        if op in "di" and any(abs(j - b) <= 2 for b in joins):
            lost += op == "d"
            doubled += op == "i"
    shown_lat, final_lat = [], []
    for op, i, j in ops:
        if op == "=" and i < len(word_ends):
            shown_lat.append(first_seen[j] - word_ends[i])
            final_lat.append(final_time[j] - word_ends[i])
    repeats = sum(collapse_repeats(r["final_text"])[1] > 0 for _, r in finals)
    timing = [r for _, r in finals if r.get("final_text")]
    return hyp, lost, doubled, repeats, shown_lat, final_lat, len(joins), timing


def whole_file(engine, audio: np.ndarray):
    """The ceiling: the same model on the whole file, and each word's end time (s)."""
    segments, _ = engine._whisper.transcribe(audio, language="en", beam_size=1, word_timestamps=True,
                                             condition_on_previous_text=False, vad_filter=False)  # fmt: skip
    words, ends = [], []
    for segment in segments:
        for word in segment.words:
            for w in normalise(word.word):
                words.append(w)
                ends.append(word.end)
    return words, ends


def p50(values: list[float]) -> str:
    return f"{statistics.median(values):5.2f}" if values else "  nan"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--set", action="append", default=[], help="section.key=value (TOML value)")
    parser.add_argument("--only", default="", help="clips whose name contains this (see clips())")
    parser.add_argument("--show", action="store_true", help="print the reference and live words in full")
    parser.add_argument("--device", default="cpu", help="where Whisper decodes: cpu, cuda, cuda:N")
    parser.add_argument("--audio", type=Path, default=AUDIO, help="folder of jfk.wav and two_speakers_phone.wav")
    args = parser.parse_args()
    import tomllib

    from inference.engines.whisper import WhisperEngine
    from inference.vad_fsmn import FsmnScorer
    from tests.conftest import make_config
    from tests.server_thread import ServerThread

    sections: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = tomllib.loads(f"v = {value}")["v"]
    sections.setdefault("inference", {}).setdefault("device", args.device)
    config = make_config(**sections)
    engine = WhisperEngine(config.whisper, args.device)
    server = ServerThread(config, engine, FsmnScorer()).start()
    allocator = "freed memory reused" if REUSING_FREED_MEMORY else "glibc malloc defaults"
    print(f"settings: {args.set or 'defaults'}; Whisper on {args.device}; {allocator}")
    header = f"{'clip':38} {'str':>3} | {'WER live':>8} {'ceiling':>7} | {'cuts':>4} {'lost':>4} {'dbl':>3} {'rep':>3} | {'shown p50':>9} {'final p50':>9} {'final p95':>9}"  # noqa: E501
    try:
        corpus = clips(args.only, args.audio)
        ceilings = {}
        for clip in corpus:
            ceilings[clip.name] = whole_file(engine, clip.audio)
        for streams in args.streams:
            print(header)
            totals: dict[str, list] = {"shown": [], "final": [], "timing": []}
            for clip in corpus:
                ceiling, ends = ceilings[clip.name]
                ref = normalise(clip.reference) if clip.reference else ceiling
                # word end times index the reference when the ceiling decodes it word for word
                ref_ends = ends if len(ceiling) == len(ref) else _ends_for(ref, ceiling, ends)
                outs = asyncio.run(_run_all(server, clip, streams, ref, ref_ends))
                live = statistics.mean(wer(ref, o[0]) for o in outs)
                shown = [x for o in outs for x in o[4]]
                final = [x for o in outs for x in o[5]]
                totals["shown"] += shown
                totals["final"] += final
                totals["timing"] += [r for o in outs for r in o[7]]
                print(
                    f"{clip.name[:38]:38} {streams:>3} | {live:8.3f} {wer(ref, ceiling):7.3f} | "
                    f"{sum(o[6] for o in outs):>4} {sum(o[1] for o in outs):>4} {sum(o[2] for o in outs):>3} "
                    f"{sum(o[3] for o in outs):>3} | {p50(shown):>9} {p50(final):>9} "
                    f"{(np.percentile(final, 95) if final else float('nan')):9.2f}"
                )
                if args.show:
                    print(f"    reference: {' '.join(ref)}\n    live: {' '.join(outs[0][0])}")
                    print("    finals: " + " | ".join(f"{r['final_text']} [{r.get('end_reason')}]" for r in outs[0][7]))
                elif streams == args.streams[0]:
                    print(f"    live: {' '.join(outs[0][0])[:300]}")
            shown, final = p50(totals["shown"]), p50(totals["final"])
            print(f"{'all clips':38} {streams:>3} | per-word latency p50: first shown {shown} s, in final {final} s")
            print(f"{'':38} {streams:>3} | {_final_breakdown(totals['timing'])}\n")
    finally:
        server.stop()


def _final_breakdown(finals: list[dict]) -> str:
    """Where a final's time goes (the server's own fields, p50 over the finals with text): last
    speech heard -> segment closed, waiting for the model, the model call, closed -> final sent."""

    def median_ms(key: str) -> str:
        values = [r[key] for r in finals if r.get(key) is not None]
        return f"{statistics.median(values):.0f}" if values else "-"

    fallbacks = sum(1 for r in finals if r.get("temperature"))
    return (
        f"finals p50 (ms): endpoint {median_ms('endpoint_ms')}, queue {median_ms('queue_ms')}, "
        f"decode {median_ms('decode_ms')}, closed->final {median_ms('final_ms')}; "
        f"{fallbacks}/{len(finals)} decoded again at a higher temperature"
    )


def _ends_for(ref: list[str], ceiling: list[str], ends: list[float]) -> list[float]:
    """Word end times for the reference's words, from the aligned ceiling words (gaps interpolated)."""
    out = [float("nan")] * len(ref)
    for op, i, j in align(ref, ceiling):
        if op in "=s" and i < len(ref) and j < len(ends):
            out[i] = ends[j]
    known = [k for k, v in enumerate(out) if v == v]
    for k in range(len(out)):
        if out[k] != out[k] and known:
            out[k] = out[min(known, key=lambda q: abs(q - k))]
    return out


async def _run_all(server, clip, streams, ref, ends):
    holders: list = []
    results = await asyncio.gather(*(play(server.url, clip.audio, holders) for _ in range(streams)))
    return [analyse(r, ref, ends) for r in results]


if __name__ == "__main__":
    main()

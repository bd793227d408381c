"""Test speech with exactly known boundaries: espeak-ng phrases placed between digital silences."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

RATE = 16000
# A folder where rendered phrases are kept and reused: a machine without espeak-ng and sox (the lent
# GPU machine) replays phrases rendered here, sample for sample.
CACHE_ENV = "SPEECH_CACHE_DIR"


def tools_available() -> bool:
    return shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


@lru_cache(maxsize=64)
def _phrase(text: str, rate_wpm: int, voice: str) -> bytes:
    cache = os.environ.get(CACHE_ENV)
    kept = Path(cache, hashlib.sha1(f"{voice}|{rate_wpm}|{text}".encode()).hexdigest() + ".pcm") if cache else None
    if kept is not None and kept.is_file():
        return kept.read_bytes()
    pcm = _render(text, rate_wpm, voice)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(pcm)
    return pcm


def _render(text: str, rate_wpm: int, voice: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp, "raw.wav"), Path(tmp, "out.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True)
        with wave.open(str(out)) as w:
            return w.readframes(w.getnframes())


def phrase(text: str, rate_wpm: int = 130, voice: str = "en") -> np.ndarray:
    """espeak-ng speech at 16 kHz, float32, trimmed to its first and last audible sample."""
    audio = np.frombuffer(_phrase(text, rate_wpm, voice), dtype="<i2").astype(np.float32) / 32768
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[loud[0] : loud[-1] + 1].copy()


@dataclass(frozen=True)
class Script:
    audio: np.ndarray  # float32 at 16 kHz
    spans: list[tuple[int, int]]  # [start, end) sample of each phrase
    texts: list[str]


def compose(parts: list[str | float], rate_wpm: int = 130, voice: str = "en") -> Script:
    """Alternate phrases (str) and silences (float seconds) into one signal with known spans."""
    chunks, spans, texts, cursor = [], [], [], 0
    for part in parts:
        if isinstance(part, str):
            audio = phrase(part, rate_wpm, voice)
            spans.append((cursor, cursor + len(audio)))
            texts.append(part)
        else:
            audio = np.zeros(int(round(part * RATE)), dtype=np.float32)
        chunks.append(audio)
        cursor += len(audio)
    return Script(np.concatenate(chunks), spans, texts)


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 32767 / 32768) * 32768).astype("<i2").tobytes()


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(to_pcm16(audio))
    return path

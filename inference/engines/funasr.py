"""FunASR's Chinese model family: SeACo-Paraformer (or SenseVoiceSmall, or Fun-ASR-Nano) offline,
Paraformer streaming for partials, CT-Transformer punctuation. Every model loads through
funasr.AutoModel from a local directory that inference.model_hub resolved first (hub cache or
download), so a missing model stops startup with one clear message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from inference.engines import funasr_nano, funasr_registry
from inference.engines.base import Audio, DecodeOptions, DecodeResult
from inference.model_hub import ModelUnavailable, resolve_model_dir

if TYPE_CHECKING:
    from settings.config import FunasrConfig

log = logging.getLogger(__name__)

_SENSEVOICE_LANGUAGES = ("zh", "en", "yue", "ja", "ko")
_TAG = re.compile(r"<\|[^|]*\|>")
_UNKNOWN = "<unk>"  # FunASR models spell tokens outside their vocabulary so; nothing a reader should see
_CJK_GAP = re.compile(r"(?<=[\u3000-\u9fff\uff00-\uffef]) +(?=[\u3000-\u9fff\uff00-\uffef])")
# A Paraformer transcribes the scripts its vocabulary spells: Chinese characters (zh) and Latin
# word pieces (en; paraformer-zh's vocab8404 has thousands of them, for English inside Chinese
# speech). A script counts from this many tokens on, so a few stray ones decide nothing.
MIN_SCRIPT_TOKENS = 100
MIN_AUDIO_SAMPLES = 2400  # 150 ms: shorter clips crash Paraformer's frontend ("n must be > 0") and hold no word
SAMPLES_PER_MS = 16


class Answer(TypedDict, total=False):
    """One item of what AutoModel.generate returns: FunASR's "key" and "text"; Paraformer adds
    "timestamp" ([start_ms, end_ms] per character or word), Fun-ASR-Nano "timestamps" (and keys
    nothing here reads: "text_tn", "ctc_text", ...), the punctuation model "punc_array"."""

    key: str
    text: str
    timestamp: list[list[int]]
    timestamps: list[funasr_nano.CharTime]


class AutoModelLike(Protocol):
    """What is used of a funasr.AutoModel (which ships no types)."""

    kwargs: dict[str, Any]  # its resolved configuration: "model" (the model class name), "tokenizer", ...
    model: Any  # the torch module

    def generate(self, input: Any, **cfg: Any) -> list[Answer]: ...


@dataclass
class StreamState:
    """One stream's streaming-model cache for the open segment, and the text it produced so far."""

    chunk_size: tuple[int, ...]  # FunASR's (left, chunk, right) in 60 ms units
    cache: dict[str, Any] = field(default_factory=dict)  # FunASR's own; opaque here
    text: str = ""


def _quiet_import_automodel(path: Path, overrides: dict[str, Any]) -> Callable[..., AutoModelLike]:
    # funasr prints an ffmpeg notice to stdout on import; startup output should be our own lines.
    # Only the modules that register the classes this model names are imported, not all of funasr.
    with contextlib.redirect_stdout(io.StringIO()):
        funasr_registry.prepare(path, overrides)
        from funasr import AutoModel
    automodel: Callable[..., AutoModelLike] = AutoModel
    return automodel


@contextlib.contextmanager
def _funasr_logs_quiet() -> Iterator[None]:
    # FunASR logs a dozen INFO lines per model on the root logger ("download models from model hub"
    # even for a local directory); keep its warnings, drop that noise from the server's log.
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def load_automodel(spec: str, role: str, settings: FunasrConfig, device: str) -> AutoModelLike:
    """Resolve `spec` to a directory and load it the way FunASR documents: AutoModel(model=dir)."""
    path = resolve_model_dir(spec, role, settings.hub, settings.model_cache_dir, settings.allow_download)
    # Fun-ASR-Nano's config names its LLM's directory relative to the model's own.
    overrides = funasr_nano.automodel_overrides(path, spec, role) if funasr_nano.is_nano(path) else {}
    try:
        AutoModel = _quiet_import_automodel(path, overrides)
        with contextlib.redirect_stdout(io.StringIO()), _funasr_logs_quiet():
            # ncpu: AutoModel sets torch's process-wide thread count from it on every call.
            # Not fp16=True: that casts the weights but not the features, and Paraformer then fails
            # on mixed dtypes; half precision comes from autocast around each call instead.
            return AutoModel(
                model=str(path),
                device=device,
                disable_update=True,
                disable_pbar=True,
                ncpu=os.cpu_count() or 1,
                **overrides,
            )
    except Exception as exc:
        raise ModelUnavailable(f"funasr.{role} = {spec!r}: loading {path} failed: {type(exc).__name__}: {exc}") from exc


def hotword_argument(hotwords: Sequence[tuple[str, int]]) -> str:
    """SeACo's `hotword=` string: phrases joined by spaces. FunASR fetches a hotword argument that
    starts with "http" and reads one ending in ".txt" as a server file, so such phrases (which no
    speaker says) are left out rather than let a client make the server open URLs or files."""
    phrases = []
    for phrase, _ in hotwords:
        lowered = phrase.lower()
        if lowered.startswith("http") or lowered.endswith(".txt") or "://" in lowered:
            log.warning("hotword %r dropped: it looks like a URL or file name", phrase)
            continue
        phrases.append(phrase)
    return " ".join(phrases)


def _clean(text: str) -> str:
    """Model text as captions show it: no <unk>, single spaces, none between Chinese characters
    (with timestamps on, FunASR separates every character by a space)."""
    return _CJK_GAP.sub("", " ".join(str(text).replace(_UNKNOWN, " ").split()))


def vocabulary_languages(tokens: object) -> tuple[str, ...] | None:
    """The languages a Paraformer's token list spells (see MIN_SCRIPT_TOKENS); None without one."""
    if not isinstance(tokens, (list, tuple)) or not tokens:
        return None
    words = [t for t in tokens if not (t.startswith("<") and t.endswith(">"))]  # <blank>, <unk>, ...
    chinese = sum(any("\u4e00" <= c <= "\u9fff" for c in t) for t in words)
    latin = sum(any(c.isascii() and c.isalpha() for c in t) for t in words)
    found = tuple(code for code, count in (("en", latin), ("zh", chinese)) if count >= MIN_SCRIPT_TOKENS)
    return found or None


def _cuda_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_bf16_supported())


def _model_class(model: AutoModelLike) -> str:
    return str(model.kwargs["model"])  # AutoModel's build_model looked the class up by this name


class FunasrEngine:
    name = "funasr"

    def __init__(self, settings: FunasrConfig, device: str) -> None:
        self.settings = settings
        self.device = device
        self._offline = load_automodel(settings.offline_model, "offline_model", settings, device)
        self._online = (
            load_automodel(settings.online_model, "online_model", settings, device) if settings.online_model else None
        )
        self._punc = (
            load_automodel(settings.punc_model, "punc_model", settings, device) if settings.punc_model else None
        )
        self.offline_class = _model_class(self._offline)
        self.sensevoice = "SenseVoice" in self.offline_class
        self.nano = self.offline_class == funasr_nano.MODEL_CLASS
        if self.nano:
            funasr_nano.without_unusable_alignment(self._offline)
        self.model = " + ".join(m for m in (settings.offline_model, settings.online_model, settings.punc_model) if m)
        # The codes its offline model transcribes (None: unknown, any is let through).
        self.languages: tuple[str, ...] | None = self._model_languages()
        if problem := self.language_problem(settings.language):  # one line at startup, not a traceback
            raise ModelUnavailable(f"funasr.language: {problem}")
        if settings.long_segment_s and (self.sensevoice or self.nano):
            # A pause close may fall inside a word; only timed characters (Paraformer) can join there.
            raise ModelUnavailable(
                f"funasr.long_segment_s = {settings.long_segment_s:g}: {self.offline_class} decodes each segment "
                "alone (no timestamps to join segments closed at short pauses), so words would be split at "
                "those pauses; set it to 0 for this model"
            )
        # What decodes whole files (never the streaming model): recorded with file results.
        self.file_model = " + ".join(m for m in (settings.offline_model, settings.punc_model) if m)
        self._cpu: FunasrEngine | None = None
        log.info(
            "funasr engine: offline %s (%s), online %s, punc %s on %s",
            settings.offline_model,
            self.offline_class,
            settings.online_model or "-",
            settings.punc_model or "-",
            device,
        )

    @property
    def streaming(self) -> bool:
        """Partials come from the streaming model, chunk by chunk, instead of offline re-decodes."""
        return self._online is not None

    def _model_languages(self) -> tuple[str, ...] | None:
        if self.nano:  # told the language in its prompt: the ones it has a name for
            return tuple(funasr_nano.LANGUAGE_NAMES)
        if self.sensevoice:
            return _SENSEVOICE_LANGUAGES
        # None, one tokenizer or a list of them, with or without a token list (SentencePiece's has none)
        tokenizer = self._offline.kwargs["tokenizer"]
        return vocabulary_languages(getattr(tokenizer, "token_list", None))

    def language_problem(self, language: str) -> str | None:
        """A code its offline model cannot transcribe (given to SenseVoice, or to Paraformer, which
        takes no language, it came back as the model's own language with no error)."""
        if language == "auto" or self.languages is None or language in self.languages:
            return None
        model = f"{self.name} engine's model ({self.settings.offline_model})"
        known = ", ".join(sorted(self.languages))
        return f"language {language!r} is not one the {model} knows; it knows 'auto' and {known}"

    # --- offline: finals (and partial re-decodes when there is no streaming model) ---------------
    def decode(self, audios: Sequence[Audio], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        # Audio around a cut for length (context before, look-ahead after: streaming.cuts) is decoded
        # with the segment by Paraformer, which times each character, and only the characters whose
        # middle lies in the segment are kept. SenseVoice and Fun-ASR-Nano decode the segment alone.
        spans: list[tuple[int, int] | None] = [None] * len(audios)
        if not (self.sensevoice or self.nano):
            spans = [_span_ms(a, o) if o.context_samples or o.after_samples else None for a, o in zip(audios, options)]
        audios = [a if span else _segment_only(a, o) for a, o, span in zip(audios, options, spans)]
        results: list[DecodeResult | None] = [None] * len(audios)
        # One model call per hotword list / language (/ ITN for Fun-ASR-Nano, whose prompt says it):
        # SeACo takes one hotword string per call.
        groups: dict[tuple[str, str, bool], list[int]] = {}
        for i, option in enumerate(options):
            language = option.language or self.settings.language
            if self.language_problem(language):  # refused at a stream's or job's start; here for other callers
                results[i] = DecodeResult("", extra={"language": language, "dropped": "unsupported_language"})
                continue
            key = (self._hotword_string(option), self._language(option), option.itn if self.nano else True)
            groups.setdefault(key, []).append(i)
        for (hotwords, language, itn), indices in groups.items():
            audible = [i for i in indices if len(audios[i]) >= MIN_AUDIO_SAMPLES]
            for i in set(indices) - set(audible):
                results[i] = DecodeResult(text="")
            if not audible:
                continue
            batch = [np.ascontiguousarray(audios[i], dtype=np.float32) for i in audible]
            if self.nano:
                out = self._generate_nano(batch, hotwords, language, itn)
            else:
                out = self._generate_offline(batch, hotwords, language)
            for i, item in zip(audible, out):
                results[i] = self._offline_result(item, options[i], spans[i])
        # A decode whose text and timestamps did not pair up: the segment alone, as without a join.
        unjoined = [i for i, result in enumerate(results) if result is None]
        if unjoined:
            plain = [dataclasses.replace(options[i], context_samples=0, after_samples=0) for i in unjoined]
            again = self.decode([_segment_only(audios[i], options[i]) for i in unjoined], plain)
            for i, result in zip(unjoined, again):
                results[i] = result
        # Timestamps count from the start of the audio given (context included): a segment decoded
        # alone started context_samples into it. (Every model's answer, Fun-ASR-Nano's too.)
        alone = {i for i, span in enumerate(spans) if span is None} | set(unjoined)
        done = [r for r in results if r is not None]
        assert len(done) == len(results)  # every request answered above
        return [
            _shifted(r, options[i].context_samples // SAMPLES_PER_MS) if i in alone else r for i, r in enumerate(done)
        ]

    def _generate_nano(self, batch: list[Audio], hotwords: str, language: str, itn: bool) -> list[Answer]:
        bf16 = self.settings.fp16 and self.device.startswith("cuda") and _cuda_bf16()
        phrases = hotwords.split("\n") if hotwords else []
        kwargs = funasr_nano.generate_arguments(batch, phrases, language or None, itn, bf16)
        # Not under _precision(): float16 autocast would reach the LLM, which needs bfloat16.
        out = self._offline.generate(
            input=funasr_nano.as_inputs(batch), batch_size=len(batch), disable_pbar=True, **kwargs
        )
        if len(out) != len(batch):
            raise RuntimeError(f"Fun-ASR-Nano answered {len(out)} results for {len(batch)} segments")
        return out

    def _generate_offline(self, batch: list[Audio], hotwords: str, language: str) -> list[Answer]:
        kwargs: dict[str, Any] = {"batch_size": len(batch), "disable_pbar": True}
        if self.sensevoice:
            kwargs.update(language=language, use_itn=True)
        elif hotwords:  # even "" switches SeACo's biasing on, so only pass real ones
            kwargs["hotword"] = hotwords
        with self._precision():
            out = self._offline.generate(input=batch, **kwargs)
        if len(out) != len(batch):
            # FunASR returns [] for a batch in which no item produced a token; ask item by item.
            if len(batch) == 1:
                return [{"text": ""}]
            return [item for audio in batch for item in self._generate_offline([audio], hotwords, language)]
        return out

    def _precision(self) -> AbstractContextManager[None]:
        if self.settings.fp16 and self.device.startswith("cuda"):
            import torch

            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _offline_result(
        self, item: Answer, option: DecodeOptions, span: tuple[int, int] | None = None
    ) -> DecodeResult | None:
        """The caption of one model answer; with `span` (ms of the audio the segment covers), only
        its characters (None: the text does not pair with the timestamps, it cannot be cut)."""
        words_end_ms: int | None = None
        if span is not None:
            kept = _within(item, span)
            if kept is None:
                return None
            item, words_end_ms = kept
        text = _clean(funasr_nano.text_of(item) if self.nano else item.get("text", ""))
        extra: dict[str, Any] = {}
        if self.sensevoice:
            tags = _TAG.findall(text)
            language = next((t[2:-2] for t in tags if t[2:-2] in _SENSEVOICE_LANGUAGES), None)
            text = _TAG.sub("", text).strip()
            extra = {"language": language, "itn_done": True}  # SenseVoice writes numbers and punctuation itself
        elif self.nano:
            extra = {"itn_done": True}  # it writes punctuation, and numbers as its prompt asked (itn)
            return DecodeResult(text=text, timestamps=funasr_nano.timestamps_ms(item), extra=extra)
        elif not option.partial:
            text = self.punctuate(text)
        stamps = item.get("timestamp")
        timestamps = tuple((int(a), int(b)) for a, b in stamps) if stamps is not None and len(stamps) else None
        return DecodeResult(text=text, timestamps=timestamps, extra=extra, words_end_ms=words_end_ms)

    def punctuate(self, text: str) -> str:
        if self._punc is None or not text.strip():
            return text
        if text.lstrip().lower().startswith("http"):
            return text  # FunASR would fetch text starting with "http" as a URL instead of punctuating it
        with self._precision():
            out = self._punc.generate(input=text, disable_pbar=True)
        return _clean(out[0].get("text", text)) if out else text

    def _hotword_string(self, option: DecodeOptions) -> str:
        if self.nano:  # phrases go into its prompt, one a line here; FunASR opens no URL or file for them
            return "\n".join(funasr_nano.hotword_list(option.hotwords))
        return hotword_argument(option.hotwords)

    def _language(self, option: DecodeOptions) -> str:
        language = option.language or self.settings.language
        if self.nano:
            return funasr_nano.language_name(language) or ""
        return language if language in _SENSEVOICE_LANGUAGES else "auto"

    # --- streaming: partials in online/2pass modes, the final in online mode -------------------
    def new_stream_state(self, chunk_size: tuple[int, int, int] = (5, 10, 5)) -> StreamState:
        return StreamState(tuple(chunk_size))

    def stream(self, steps: Sequence[tuple[StreamState, Audio, bool, DecodeOptions]]) -> list[DecodeResult]:
        """One chunk per stream. FunASR's streaming Paraformer keeps its cache in a dict per call, so
        chunks of different streams cannot share one forward pass; each gets its own call."""
        assert self._online is not None, "stream() needs funasr.online_model"
        results: list[DecodeResult] = []
        for state, audio, is_final, option in steps:
            with self._precision():
                out = self._online.generate(
                    input=np.ascontiguousarray(audio, dtype=np.float32),
                    cache=state.cache,
                    is_final=is_final,
                    chunk_size=list(state.chunk_size),
                    encoder_chunk_look_back=self.settings.encoder_chunk_look_back,
                    decoder_chunk_look_back=self.settings.decoder_chunk_look_back,
                    disable_pbar=True,
                )
            state.text += "".join(_clean(item.get("text", "")) for item in out)
            text = state.text
            if is_final:
                state.cache.clear()  # the segment is over; nothing may leak into the next one
                if not option.partial:
                    text = self.punctuate(text)
            results.append(DecodeResult(text=text))
        return results

    def on_cpu(self) -> FunasrEngine:
        if self._cpu is None:
            self._cpu = self if self.device == "cpu" else FunasrEngine(self.settings, "cpu")
        return self._cpu


def _span_ms(audio: Audio, option: DecodeOptions) -> tuple[int, int]:
    """Where the segment lies in a request's audio (ms), between its context and look-ahead."""
    return option.context_samples // SAMPLES_PER_MS, (len(audio) - option.after_samples) // SAMPLES_PER_MS


def _segment_only(audio: Audio, option: DecodeOptions) -> Audio:
    return audio[option.context_samples : len(audio) - option.after_samples]


def _within(item: Answer, span: tuple[int, int]) -> tuple[Answer, int | None] | None:
    """The model answer cut to the characters (words, for English) whose middle lies in `span`, and
    where the last of them ends (ms); None when its text and timestamps do not pair one to one.
    Both sides of a cut apply the same rule, so the character the cut went through is kept once."""
    tokens, stamps = str(item.get("text", "")).split(), item.get("timestamp")
    if stamps is None or len(stamps) != len(tokens):
        return None
    kept = [(token, (int(a), int(b))) for token, (a, b) in zip(tokens, stamps) if span[0] <= (a + b) / 2 < span[1]]
    cut: Answer = {**item, "text": " ".join(t for t, _ in kept), "timestamp": [list(ab) for _, ab in kept]}
    return cut, kept[-1][1][1] if kept else None


def _shifted(result: DecodeResult, offset_ms: int) -> DecodeResult:
    if not offset_ms or not result.timestamps:
        return result
    timestamps = tuple((a + offset_ms, b + offset_ms) for a, b in result.timestamps)
    return dataclasses.replace(result, timestamps=timestamps)

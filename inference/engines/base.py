"""The engine interface: a batch of 16 kHz waveforms in, one result per waveform out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

Audio: TypeAlias = npt.NDArray[np.float32]  # 16 kHz samples in [-1, 1)


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request settings; engines use what they support and ignore the rest."""

    language: str | None = None
    hotwords: tuple[tuple[str, int], ...] = ()  # (phrase, weight) in the order the client sent them
    itn: bool = True
    partial: bool = False  # partial re-decodes may trade accuracy for speed
    # The audio's first `context_samples` are the stream's audio before the segment, there for
    # context only: an engine returns the words after them (or ignores context it cannot use).
    context_samples: int = 0
    after_samples: int = 0  # likewise at the end: audio after a segment cut for length, for context only
    # The segment after a cut for length: the words of the final before the cut that lie in its
    # context. An engine that can forces them as the start of its decode and returns only what it
    # says after them (then `context_samples` is only a fallback for telling the segment's words).
    prefix: str = ""


@dataclass(frozen=True)
class DecodeResult:
    text: str
    # Per-token/word [start_ms, end_ms] relative to the waveform start, when the engine has them.
    timestamps: tuple[tuple[int, int], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Where the last returned word ends, in ms from the start of the audio decoded (context
    # included), when the engine placed its words in time (Whisper with context). After a cut for
    # length, the decode of what follows keeps only the words after it (streaming.events.with_context).
    words_end_ms: int | None = None
    # The returned words with their [start, end] (ms from the start of the audio decoded), when
    # the engine placed them in time (Whisper with context): the next final after a cut forces
    # those in its context as its prefix (DecodeOptions.prefix).
    words: tuple[tuple[str, int, int], ...] | None = None


class Engine(Protocol):
    name: str  # "whisper"
    model: str  # human-readable model id for /healthz
    device: str  # resolved device the weights live on

    @property
    def streaming(self) -> bool:
        """Partials come chunk by chunk from a streaming model (a `StreamingEngine`), not from
        offline re-decodes of the open segment."""
        ...

    @property
    def file_model(self) -> str:
        """The model that decodes whole files, as recorded with their results: `model` unless the
        engine also holds models files never use (FunASR's streaming model)."""
        ...

    def decode(self, audios: Sequence[Audio], options: Sequence[DecodeOptions]) -> list[DecodeResult]:
        """Decode a batch in one model call where possible. May raise; the executor handles it."""
        ...

    def language_problem(self, language: str) -> str | None:
        """Why this engine cannot transcribe `language` (a code a client asked for), naming what
        can; None when it can, or when it does not use the setting. Streams are refused with it
        at their start: text in the wrong language must never come back silently."""
        ...

    def on_cpu(self) -> Engine:
        """The same engine on the CPU, built on first use: the fallback after GPU out-of-memory."""
        ...


class StreamingEngine(Engine, Protocol):
    """An engine whose `streaming` is True: partials come chunk by chunk from a streaming model,
    whose cache each stream holds (opaque to the caller) between chunks."""

    def new_stream_state(self, chunk_size: tuple[int, int, int] = (5, 10, 5)) -> Any:
        """A fresh cache for one stream's open segment."""
        ...

    def stream(self, steps: Sequence[tuple[Any, Audio, bool, DecodeOptions]]) -> list[DecodeResult]:
        """One (state, chunk, is_final, options) per stream in, one result per chunk out."""
        ...

"""One batch of decode work through the engines, synchronously: the code both backends run.

The local backend calls `BatchDecoder.decode` on its decode thread; a Ray Serve replica calls the
same method on its own (inference.ray_backend). Here a failing request is isolated from its batch
mates, a CUDA out-of-memory batch is split and a single request falls back to the CPU, finals get
inverse text normalisation, and streaming chunks go through the engine's streaming model. No
asyncio, no futures: work in, one result or exception per item out, in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from inference.devices import is_out_of_memory
from inference.engines.base import DecodeOptions, DecodeResult, Engine, StreamingEngine

log = logging.getLogger(__name__)

Answer = DecodeResult | BaseException
Normalizer = Callable[[str, str | None], str]


@dataclass(frozen=True, eq=False)
class DecodeWork:
    """A waveform for an engine's offline model (a final, a partial re-decode or a file segment)."""

    audio: npt.NDArray[np.float32]
    options: DecodeOptions
    engine: str  # the engine's name: a batch never mixes engines

    @property
    def final(self) -> bool:
        return not self.options.partial


@dataclass(frozen=True, eq=False)
class StepWork:
    """One chunk for the live engine's streaming model; `state` is that stream's cache."""

    state: Any
    audio: npt.NDArray[np.float32]
    is_final: bool
    options: DecodeOptions

    @property
    def final(self) -> bool:
        return self.is_final


Work = DecodeWork | StepWork


@dataclass(eq=False)
class CarriedState:
    """A streaming cache that travels with each request instead of living in one process (the Ray
    backend): `args` make the engine's fresh state on first use; after each chunk the decoder
    leaves the updated state in `state`, and the caller keeps the copy that comes back."""

    args: tuple[Any, ...]
    state: Any = None


@dataclass
class BatchOutcome:
    """What one call to `decode` answered, and what it cost."""

    results: list[Answer]
    states: list[Any]  # per item: the streaming state after the chunk (None for decodes)
    decode_s: float = 0.0
    errors: int = 0  # model calls that failed for every attempt
    cpu_fallbacks: int = 0  # single requests decoded on the CPU after CUDA ran out of memory
    replica: str = "local"  # who decoded it (a Ray replica's id)
    queue_s: float = 0.0  # how long it waited where it was decoded (a replica's priority queue)
    queued: int = 0  # batches waiting behind it there when it started
    size: int = 0  # requests in the model call (a replica may merge batches of several front ends)
    extra: dict[str, Any] = field(default_factory=dict)


class BatchDecoder:
    """The engines by name, the live one's streaming model, and the normaliser for finals."""

    def __init__(self, engines: Mapping[str, Engine], live: str, normalizer: Normalizer | None = None) -> None:
        self.engines = dict(engines)
        self.live = live
        self.normalizer = normalizer

    def decode(self, batch: Sequence[Work]) -> BatchOutcome:
        """One result or exception per item, in batch order (never raises for a model failure)."""
        started = time.monotonic()
        outcome = BatchOutcome([], [], size=len(batch))
        decodes = [w for w in batch if isinstance(w, DecodeWork)]
        steps = [w for w in batch if isinstance(w, StepWork)]
        answers: dict[int, Answer] = {}
        if decodes:
            try:
                decoded = self._decode_requests(decodes, outcome)
            except Exception as exc:  # every attempt failed (e.g. out of memory on the CPU too)
                log.exception("decode of %d request(s) failed", len(decodes))
                outcome.errors += 1
                decoded = [exc] * len(decodes)
            answers.update(zip(map(id, decodes), decoded))
        states: dict[int, Any] = {}
        if steps:
            engine_states = [self._engine_state(s.state) for s in steps]
            answers.update(zip(map(id, steps), self._stream_steps(steps, engine_states)))
            for step, state in zip(steps, engine_states):
                if isinstance(step.state, CarriedState):
                    step.state.state = state
                states[id(step)] = step.state
        outcome.results = [self._normalize(w, answers[id(w)]) for w in batch]
        outcome.states = [states.get(id(w)) for w in batch]
        outcome.decode_s = time.monotonic() - started
        return outcome

    @property
    def _streaming_engine(self) -> StreamingEngine:
        return cast(StreamingEngine, self.engines[self.live])

    def _engine_state(self, state: Any) -> Any:
        if not isinstance(state, CarriedState):
            return state  # the local backend: the engine's own state, updated in place
        if state.state is None:
            state.state = self._streaming_engine.new_stream_state(*state.args)
        return state.state

    def _normalize(self, work: Work, result: Answer) -> Answer:
        # Finals only: partials are provisional, and rewriting them would make stable text move.
        if isinstance(result, BaseException) or not work.final or self.normalizer is None or not work.options.itn:
            return result
        if result.extra.get("itn_done"):  # the engine normalised already (SenseVoice does its own)
            return result
        language = result.extra.get("language") or work.options.language
        return replace(result, text=self.normalizer(result.text, language))

    def _stream_steps(self, steps: Sequence[StepWork], states: Sequence[Any]) -> list[Answer]:
        try:
            calls = [(state, s.audio, s.is_final, s.options) for s, state in zip(steps, states)]
            results = self._streaming_engine.stream(calls)
            if len(results) != len(steps):
                raise RuntimeError(f"engine returned {len(results)} results for {len(steps)} chunks")
            return list(results)
        except Exception as exc:
            if len(steps) == 1:
                return [exc]
            log.warning("streaming batch of %d failed (%s); retrying one by one", len(steps), exc)
            return [self._stream_steps([step], [state])[0] for step, state in zip(steps, states)]

    def _decode_requests(self, batch: Sequence[DecodeWork], outcome: BatchOutcome) -> list[Answer]:
        names = {w.engine for w in batch}
        if len(names) != 1:  # the scheduler never builds one; it would decode with the wrong model
            raise RuntimeError(f"a decode batch mixes engines: {sorted(names)}")
        engine = self.engines[names.pop()]
        audios = [w.audio for w in batch]
        options = [w.options for w in batch]
        try:
            return list(self._decode_with_oom_recovery(engine, audios, options, outcome))
        except Exception as exc:
            if len(batch) == 1 or is_out_of_memory(exc):
                raise
            # Isolate the failing request(s): one bad segment must not cost the others theirs.
            log.warning("batch of %d failed (%s); retrying one by one", len(batch), exc)
            out: list[Answer] = []
            for audio, option in zip(audios, options):
                try:
                    out.extend(self._decode_with_oom_recovery(engine, [audio], [option], outcome))
                except Exception as single:
                    out.append(single)
            return out

    def _decode_with_oom_recovery(
        self,
        engine: Engine,
        audios: Sequence[npt.NDArray[np.float32]],
        options: Sequence[DecodeOptions],
        outcome: BatchOutcome,
    ) -> list[DecodeResult]:
        try:
            results = engine.decode(audios, options)
        except Exception as exc:
            if not (is_out_of_memory(exc) and engine.device.startswith("cuda")):
                raise
            if len(audios) > 1:
                half = len(audios) // 2
                log.warning("CUDA out of memory on a batch of %d; splitting and retrying", len(audios))
                return self._decode_with_oom_recovery(engine, audios[:half], options[:half], outcome) + (
                    self._decode_with_oom_recovery(engine, audios[half:], options[half:], outcome)
                )
            log.warning("CUDA out of memory on a single request; decoding it on the CPU")
            outcome.cpu_fallbacks += 1
            results = engine.on_cpu().decode(audios, options)
        if len(results) != len(audios):
            raise RuntimeError(f"engine returned {len(results)} results for {len(audios)} inputs")
        return results

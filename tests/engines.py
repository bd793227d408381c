"""Wrappers around the real engine for fault injection, and a simulated GPU (none exists here)."""

from __future__ import annotations

import threading


class RecordingEngine:
    """The real engine, recording which requests went into each model call, with their options."""

    def __init__(self, inner, fail=None):
        self.inner, self.fail = inner, fail
        self.name, self.model, self.device = inner.name, inner.model, inner.device
        self.file_model = inner.file_model
        self.streaming = False  # no stream(): partials are re-decodes, whatever the inner engine has
        self.calls: list[list[int]] = []
        self.options: list = []  # one DecodeOptions per request, in the order they were decoded
        self.gate = threading.Event()
        self.gate.set()

    def decode(self, audios, options):
        self.gate.wait(30)
        self.calls.append([len(a) for a in audios])
        self.options.extend(options)
        if self.fail and self.fail(audios):
            raise RuntimeError("injected model failure")
        return self.inner.decode(audios, options)

    def language_problem(self, language):
        return self.inner.language_problem(language)

    def on_cpu(self):
        return self.inner


class SimulatedCudaEngine(RecordingEngine):
    """Mock of a GPU engine: out of memory above `max_ok` items, or always if max_ok == 0."""

    def __init__(self, inner, max_ok):
        super().__init__(inner)
        self.device = "cuda:0"
        self.max_ok = max_ok

    def decode(self, audios, options):
        self.calls.append([len(a) for a in audios])
        if len(audios) > self.max_ok:
            raise RuntimeError("CUDA failed with error out of memory")
        return self.inner.decode(audios, options)


class SpokenFormEngine:
    """Stand-in for a recogniser that writes numbers as spoken words (Paraformer does; no model here
    speaks Chinese): answers every clip with `text`, so the executor's ITN stage can be checked."""

    name, model, device = "spoken-form", "stand-in (fixed spoken-form text)", "cpu"
    file_model, streaming = model, False

    def __init__(self, text: str, extra: dict | None = None):
        self.text, self.extra = text, extra or {}

    def decode(self, audios, options):
        from inference.engines.base import DecodeResult

        return [DecodeResult(self.text, extra=dict(self.extra)) for _ in audios]

    def language_problem(self, language):
        return None

    def on_cpu(self):
        return self


class GatedEngine:
    """Fixed text, no recognition: holds every model call while `gate` is clear and records the
    audio lengths of each call (tests of order and cancellation that need no words)."""

    name, model, device = "instant", "gated stand-in (fixed text)", "cpu"
    file_model, streaming = model, False

    def __init__(self, text: str = "open the door"):
        from inference.engines.base import DecodeResult

        self._result = DecodeResult
        self.text = text
        self.gate = threading.Event()
        self.calls: list[list[int]] = []

    @property
    def decoded(self) -> int:
        return sum(map(len, self.calls))

    def decode(self, audios, options):
        self.gate.wait(60)
        self.calls.append([len(a) for a in audios])
        return [self._result(self.text) for _ in audios]

    def language_problem(self, language):
        return None

    def on_cpu(self):
        return self


class KnownClipsEngine:
    """Stand-in that recognises only known clips, no model: each audio whose float32 samples are
    exactly one of the clips it was built with gets that clip's text; any other audio (a cut
    clip, silence, a stranger) gets "<unknown N samples>", never a known text. Deterministic and
    instant, for tests of the executor's policy (batching, lanes, stale partials, OOM, close),
    where what matters is that each request gets its OWN result; real Whisper stays for the tests
    where the words are the point. Ignores the options (language, context, prefix, hotwords).

    `texts`: {KnownClipsEngine.key(clip): text}; `KnownClipsEngine.of(clips, texts)` builds it.
    `decode_s`: seconds each model call takes (none by default), for timing tests that need it.
    Wrap it in RecordingEngine / SimulatedCudaEngine like the real engine."""

    name, model, device = "known-clips", "stand-in (recognises only known clips)", "cpu"
    file_model, streaming = model, False

    def __init__(self, texts: dict[str, str], decode_s: float = 0.0):
        self.texts, self.decode_s = dict(texts), decode_s

    @staticmethod
    def key(audio) -> str:
        """A clip's identity: the hash of its float32 samples (a copy or a view of it matches)."""
        import hashlib

        import numpy as np

        return hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()

    @classmethod
    def of(cls, clips, texts, decode_s: float = 0.0) -> KnownClipsEngine:
        clips, texts = list(clips), list(texts)
        if len(clips) != len(texts):
            raise ValueError(f"{len(clips)} clips for {len(texts)} texts")
        keys = {cls.key(c): t for c, t in zip(clips, texts)}
        if len(keys) != len(clips):
            raise ValueError("two of the clips have the same samples: they could not be told apart")
        return cls(keys, decode_s)

    def recognise(self, audio) -> str:
        return self.texts.get(self.key(audio), f"<unknown {len(audio)} samples>")

    def decode(self, audios, options):
        from inference.engines.base import DecodeResult

        if len(audios) != len(options):
            raise ValueError(f"{len(audios)} audios with {len(options)} options")
        if self.decode_s:
            import time

            time.sleep(self.decode_s)
        return [DecodeResult(self.recognise(a)) for a in audios]

    def language_problem(self, language):
        return None

    def on_cpu(self):
        return self


class KnownPhrasesEngine:
    """Stand-in with no model, for server tests: recognises only known espeak-ng phrases
    (tests/speech.py), wherever their exact samples lie whole in the audio it is given, however the
    server cut its segments. A server keeps 16 kHz audio as the int16 samples that came off the
    wire (tests/wsclient.py sends phrases as tests.speech.to_pcm16 writes them), so each phrase is
    found sample for sample: a segment that lost, doubled or mixed up any of a phrase's audio, or
    got another stream's, does not get its words. Deterministic and instant, for tests of protocol
    and policy where the words only show that a stream's own audio came through whole and in
    order; real Whisper stays where recognition is the point (languages, hotwords, resampled audio).

    Text: the phrases found, in the order they lie in the audio, joined by spaces; a phrase counts
    for the segment when its middle lies between the context before it and the audio after it
    (DecodeOptions.context_samples / after_samples). A phrase the audio ends inside of (a partial
    re-decode of an open segment), heard for at least 100 ms, gives its first words in proportion
    to how much of it was heard (a growing prefix, as a recogniser writes words while a phrase goes
    on). A phrase the audio begins inside of, resampled audio, noise: no words. Ignores the other
    options (language, hotwords, prefix), and says nothing about timestamps.

    `KnownPhrasesEngine(["hello world", ...])` renders each text as tests.speech.compose does
    (`rate_wpm`, `voice`); `decode_s`: seconds each model call takes (none by default)."""

    name, model, device = "known-phrases", "stand-in (recognises only known phrases, no model)", "cpu"
    file_model, streaming = model, False
    MIN_HEARD = 1600  # samples (100 ms) of a phrase that a trailing fragment needs to count

    def __init__(self, texts, rate_wpm: int = 130, voice: str = "en", decode_s: float = 0.0):
        import numpy as np

        from tests.speech import phrase, to_pcm16

        self.decode_s = decode_s
        self.phrases: list[tuple[str, object]] = []  # (text, int16 samples as sent on the wire)
        for text in dict.fromkeys(texts):  # in order, each once
            samples = np.frombuffer(to_pcm16(phrase(text, rate_wpm, voice)), dtype="<i2").astype(np.int16)
            self.phrases.append((text, samples))
        self.calls: list[list[int]] = []

    @staticmethod
    def _starts(audio, samples):
        """Where in `audio` (int16) `samples` may begin: its first 8 samples match there."""
        import numpy as np

        probe = min(8, len(samples))
        span = len(audio) - probe + 1
        if span <= 0:
            return np.zeros(0, dtype=np.int64)
        hit = audio[:span] == samples[0]
        for k in range(1, probe):
            hit &= audio[k : k + span] == samples[k]
        return np.flatnonzero(hit)

    def recognise(self, audio, context_samples: int = 0, after_samples: int = 0) -> str:
        import numpy as np

        pcm = np.round(np.asarray(audio, dtype=np.float32) * 32768.0).astype(np.int32)
        pcm = np.clip(pcm, -32768, 32767).astype(np.int16)
        end = len(pcm) - after_samples
        found: list[tuple[int, int, str]] = []  # (start, samples matched, words)
        for text, samples in self.phrases:
            for start in self._starts(pcm, samples):
                start = int(start)
                heard = min(len(samples), len(pcm) - start)
                if not np.array_equal(pcm[start : start + heard], samples[:heard]):
                    continue
                if heard < len(samples):  # the audio ends inside this phrase
                    if heard < self.MIN_HEARD:
                        continue
                    spoken = text.split()
                    text_heard = " ".join(spoken[: len(spoken) * heard // len(samples)])
                else:
                    text_heard = text
                if text_heard and context_samples <= start + heard // 2 < end:
                    found.append((start, heard, text_heard))
        words, taken = [], 0
        for start, heard, text in sorted(found, key=lambda f: (f[0], -f[1])):
            if start >= taken:  # two renders that begin alike: the longer match, once
                words.append(text)
                taken = start + heard
        return " ".join(words)

    def decode(self, audios, options):
        from inference.engines.base import DecodeResult

        if len(audios) != len(options):
            raise ValueError(f"{len(audios)} audios with {len(options)} options")
        if self.decode_s:
            import time

            time.sleep(self.decode_s)
        self.calls.append([len(a) for a in audios])
        return [DecodeResult(self.recognise(a, o.context_samples, o.after_samples)) for a, o in zip(audios, options)]

    def language_problem(self, language):
        return None

    def on_cpu(self):
        return self

"""A stand-in engine with no model for the file-job tests (tests/test_jobs.py, tests/test_jobs_limits.py)
and wherever a file's or stream's own audio must be heard through resampling or a container."""

from __future__ import annotations

import numpy as np

from tests.speech import RATE, Script


class WholePhrasesEngine:
    """Stand-in that hears only known phrases, no model: each audio's text is the known phrases
    found WHOLE in it (the same samples anywhere in it, as a wav, FLAC or a live stream's PCM carry
    them: normalised cross-correlation >= 0.99 over the whole phrase at the phrase's own loudness),
    in the order they are spoken, joined by spaces. Audio with none of them (silence, a phrase cut
    short, another voice) gets "<unknown N ms>", never a known text. Deterministic and a few ms a
    call, for tests of the job API's policy (limits, owners, cancel, history, duplicate names) where
    the words only tell segments, sessions and files apart; real Whisper stays for the tests where
    the words are the point. Only the segment's own audio is heard (DecodeOptions.context_samples and
    after_samples are context); the other options are ignored. `calls`: each model call's audio
    lengths. Wrap it in tests.engines.RecordingEngine like the real engine.

    `phrases`: {text: float32 samples}; `WholePhrasesEngine.of(*scripts)` takes them from
    tests.speech scripts (each phrase's span of the script's audio). `decode_s`: seconds each model
    call takes (none by default), for tests that need a decode still running at some moment (a
    signal, a kill) as the real model's would be; tests/stand_in_server.py runs a server process on it."""

    name, model, device = "whole-phrases", "stand-in (hears only whole known phrases, no model)", "cpu"
    file_model, streaming = model, False
    MATCH = 0.99  # normalised cross-correlation of a phrase with the audio where it lies
    LOUDNESS = 0.1  # and that audio's energy within 10% of the phrase's

    def __init__(self, phrases: dict[str, np.ndarray], decode_s: float = 0.0):
        self.decode_s = decode_s
        self.phrases = {text: np.asarray(clip, dtype=np.float64) for text, clip in phrases.items()}
        if not all(len(clip) for clip in self.phrases.values()):
            raise ValueError("a known phrase has no samples")
        self.calls: list[list[int]] = []

    @classmethod
    def of(cls, *scripts: Script, decode_s: float = 0.0) -> WholePhrasesEngine:
        phrases: dict[str, np.ndarray] = {}
        for script in scripts:
            for text, (start, end) in zip(script.texts, script.spans):
                clip = script.audio[start:end]
                if text in phrases and not np.array_equal(phrases[text], clip):
                    raise ValueError(f"{text!r} is spoken two ways: the stand-in would hear only one")
                phrases[text] = clip
        return cls(phrases, decode_s)

    def hear(self, audio) -> list[tuple[int, str]]:
        """(first sample, text) of each known phrase found whole in `audio`, in the order spoken."""
        audio = np.asarray(audio, dtype=np.float64)
        found = [(at, text) for text, clip in self.phrases.items() for at in self._places(audio, clip)]
        return sorted(found)

    def _places(self, audio: np.ndarray, clip: np.ndarray) -> list[int]:
        n, m = len(audio), len(clip)
        if n < m:
            return []
        size = 1 << (n + m - 1).bit_length()
        dot = np.fft.irfft(np.fft.rfft(audio, size) * np.conj(np.fft.rfft(clip, size)), size)[: n - m + 1]
        energy = np.concatenate(([0.0], np.cumsum(audio * audio)))
        window = energy[m:] - energy[: n - m + 1]  # the audio's energy under the phrase at each offset
        own = float(clip @ clip)
        loud_alike = np.abs(window - own) <= self.LOUDNESS * own
        score = np.where(loud_alike, dot / np.sqrt(np.maximum(window, own / 4) * own), 0.0)
        places: list[int] = []
        for at in np.flatnonzero(score >= self.MATCH):
            if places and at < places[-1] + m:  # the same occurrence: keep its best offset
                if score[at] > score[places[-1]]:
                    places[-1] = int(at)
                continue
            places.append(int(at))
        return places

    def decode(self, audios, options):
        from inference.engines.base import DecodeResult

        if len(audios) != len(options):
            raise ValueError(f"{len(audios)} audios with {len(options)} options")
        if self.decode_s:
            import time

            time.sleep(self.decode_s)
        self.calls.append([len(a) for a in audios])
        results = []
        for audio, option in zip(audios, options):
            own = audio[option.context_samples : len(audio) - option.after_samples]
            heard = " ".join(text for _, text in self.hear(own))
            results.append(DecodeResult(heard or f"<unknown {round(len(own) * 1000 / RATE)} ms>"))
        return results

    def language_problem(self, language):
        return None

    def on_cpu(self):
        return self

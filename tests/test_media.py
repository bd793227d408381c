"""jobs.media: real files in many formats, written here by sox and PyAV's encoders, decoded to 16 kHz mono."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from jobs import media
from jobs.media import SAMPLE_RATE, MediaError, iter_audio, probe
from tests.speech import compose, write_wav

SWITCH_S = 3.0  # every test file plays LOW_HZ up to here, then HIGH_HZ
LENGTH_S = 6.0
LOW_HZ, HIGH_HZ = 440.0, 880.0


def tone(rate: int) -> np.ndarray:
    """LOW_HZ then HIGH_HZ, phase-continuous, amplitude 0.5."""
    t = np.arange(int(LENGTH_S * rate)) / rate
    freq = np.where(t < SWITCH_S, LOW_HZ, HIGH_HZ)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(freq) / rate)).astype(np.float32)


def write_stereo_wav(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> Path:
    frames = np.stack([left, right], axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(frames, -1, 32767 / 32768) * 32768).astype("<i2").tobytes())
    return path


def sox(source: Path, target: Path) -> Path:
    subprocess.run(["sox", str(source), str(target)], check=True)
    return target


def encode(path: Path, container: str, codec: str | None, rate: int, video: str | None = None) -> Path:
    """A stereo tone (codec None: no audio) and optionally a few black video frames, via PyAV's encoders."""
    out = av.open(str(path), "w", format=container)
    streams = []
    if codec:
        audio = out.add_stream(codec, rate=rate)
        audio.layout = "stereo"
        signal = tone(rate)
        frames = []
        for i in range(0, len(signal), 1024):
            piece = np.ascontiguousarray(np.tile(signal[i : i + 1024], (2, 1)))
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, i
            frames.append(frame)
        streams.append((audio, frames))
    if video:
        stream = out.add_stream(video, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        frames = []
        for i in range(int(LENGTH_S * 10)):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            frames.append(frame)
        streams.append((stream, frames))
    for stream, frames in streams:
        for frame in [*frames, None]:
            out.mux(stream.encode(frame))
    out.close()
    return path


# name -> (rate and channels as stored, FFmpeg demuxer name contains, resume precision in output samples)
FILES = {
    "tone.wav": (8000, "wav", 0),
    "tone.mp3": (44100, "mp3", 0),
    "tone.flac": (48000, "flac", 0),
    "tone.ogg": (8000, "ogg", 0),  # Vorbis
    "tone.m4a": (44100, "mp4", 0),  # AAC
    "tone.opus": (48000, "ogg", 0),
    "tone.webm": (48000, "webm", 16),  # Opus; Matroska timestamps are whole milliseconds
    "movie.mp4": (48000, "mp4", 0),  # AAC next to an MPEG-4 video track
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    for rate in (8000, 44100, 48000):
        write_stereo_wav(d / f"src{rate}.wav", tone(rate), tone(rate), rate)
    write_stereo_wav(d / "tone.wav", tone(8000), tone(8000), 8000)
    sox(d / "src44100.wav", d / "tone.mp3")
    sox(d / "src48000.wav", d / "tone.flac")
    sox(d / "src8000.wav", d / "tone.ogg")
    encode(d / "tone.m4a", "mp4", "aac", 44100)
    encode(d / "tone.opus", "ogg", "libopus", 48000)
    encode(d / "tone.webm", "webm", "libopus", 48000)
    encode(d / "movie.mp4", "mp4", "aac", 48000, video="mpeg4")
    encode(d / "video-only.mp4", "mp4", None, 0, video="mpeg4")
    return d


def decode(path: Path, **kwargs) -> np.ndarray:
    return np.concatenate(list(iter_audio(path, **kwargs)))


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


@pytest.mark.parametrize("name", FILES)
def test_every_format_decodes_to_16k_mono(files, name):
    rate, container, _ = FILES[name]
    info = probe(files / name)
    assert (info.sample_rate, info.channels) == (rate, 2)
    assert container in info.container
    assert info.duration_s == pytest.approx(LENGTH_S, abs=0.1)

    chunks = list(iter_audio(files / name, chunk_s=1.0))
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    assert all(len(c) == SAMPLE_RATE for c in chunks[:-1]) and 0 < len(chunks[-1]) <= SAMPLE_RATE
    audio = np.concatenate(chunks)
    assert len(audio) / SAMPLE_RATE == pytest.approx(LENGTH_S, abs=0.1)  # codec padding is a few ms
    assert np.abs(audio).max() <= 1.0
    # The right pitch on both sides of the switch proves the resampling rate; the level, the downmix.
    assert dominant_hz(audio[8000:40000]) == pytest.approx(LOW_HZ, abs=2)
    assert dominant_hz(audio[56000:88000]) == pytest.approx(HIGH_HZ, abs=2)
    assert np.sqrt(np.mean(audio[8000:88000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("name", FILES)
def test_resuming_gives_the_full_decodes_samples(files, name):
    full = decode(files / name)
    tolerance = FILES[name][2]
    for start_s in (1.5, 3.7, 0.4):  # 0.4 s is inside the preroll: decoded from the start, no seek
        part = decode(files / name, chunk_s=0.7, start_s=start_s)
        first = round(start_s * SAMPLE_RATE)
        assert abs(len(part) - (len(full) - first)) <= tolerance + 1
        if tolerance == 0:  # containers whose timestamps count samples: the same samples (AAC: to 1 LSB) ...
            n = min(len(part), len(full) - first) - 800
            np.testing.assert_allclose(part[:n], full[first : first + n], rtol=0, atol=1 / 32768)
            # ... but for the resampler's flush in the last few milliseconds of the file
            np.testing.assert_allclose(part[n : n + 800], full[first + n : first + n + 800], rtol=0, atol=0.01)
        else:
            window = part[:8000]
            errors = [np.abs(full[first + lag : first + lag + 8000] - window).max() for lag in range(-40, 41)]
            assert abs(int(np.argmin(errors)) - 40) <= tolerance


@pytest.mark.parametrize("name", ["tone.flac", "tone.wav"])
def test_resume_point_is_on_the_timeline(files, name):
    """Starting at 2.0 s of a file that changes pitch at 3.0 s puts the change 1.0 s into the output."""
    audio = decode(files / name, start_s=2.0)
    before, after = audio[SAMPLE_RATE - 800 : SAMPLE_RATE], audio[SAMPLE_RATE : SAMPLE_RATE + 800]  # 50 ms each
    assert dominant_hz(before) == pytest.approx(LOW_HZ, abs=20)
    assert dominant_hz(after) == pytest.approx(HIGH_HZ, abs=20)


def test_chunks_are_fixed_size_and_join_to_the_whole(files):
    whole = decode(files / "tone.flac")
    chunks = list(iter_audio(files / "tone.flac", chunk_s=0.25))
    assert [len(c) for c in chunks[:-1]] == [4000] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


def test_start_past_the_end_yields_nothing(files):
    assert list(iter_audio(files / "tone.m4a", start_s=60.0)) == []


def test_stereo_is_averaged(tmp_path):
    x = tone(48000)
    same = decode(write_stereo_wav(tmp_path / "same.wav", x, x, 48000))
    opposite = decode(write_stereo_wav(tmp_path / "opposite.wav", x, -x, 48000))
    assert np.abs(same).max() == pytest.approx(0.5, abs=0.01)  # (L + R) / 2, not 0.707 * (L + R)
    assert np.abs(opposite).max() < 0.001


def test_speech_survives_a_lossy_round_trip(tmp_path):
    script = compose([0.3, "the quick brown fox jumps over the lazy dog", 0.3])
    source = write_wav(tmp_path / "speech16k.wav", script.audio)
    subprocess.run(["sox", str(source), "-r", "44100", "-c", "2", str(tmp_path / "speech.mp3")], check=True)
    audio = decode(tmp_path / "speech.mp3")
    assert len(audio) / SAMPLE_RATE == pytest.approx(len(script.audio) / SAMPLE_RATE, abs=0.1)
    n = len(script.audio)
    scores = np.correlate(audio[: n + 1600], script.audio, "valid")  # encoder delay: up to 100 ms
    lag = int(np.argmax(scores))
    similarity = scores[lag] / np.linalg.norm(script.audio) / np.linalg.norm(audio[lag : lag + n])
    assert similarity > 0.95


def test_no_ffmpeg_program_is_needed(files, monkeypatch):
    monkeypatch.setenv("PATH", "")  # PyAV's wheel bundles the FFmpeg libraries
    assert len(decode(files / "tone.m4a")) > 5 * SAMPLE_RATE


# --- errors ---------------------------------------------------------------------------------------
def error(path: Path) -> str:
    with pytest.raises(MediaError) as caught:
        probe(path)
    with pytest.raises(MediaError) as again:
        list(iter_audio(path))
    assert str(again.value) == str(caught.value)
    message = str(caught.value)
    assert message.startswith(f"{path.name}: ") and str(path.parent) not in message  # name only, no server path
    return message


def test_clear_errors_for_files_that_are_not_audio(files, tmp_path):
    (tmp_path / "empty.mp3").write_bytes(b"")
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(20000))
    (tmp_path / "noise.mp3").write_bytes(np.random.default_rng(1).bytes(20000))
    (tmp_path / "notes.wav").write_text("minutes of the meeting\n" * 100)
    (tmp_path / "captions.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")  # FFmpeg reads subtitles

    assert error(tmp_path / "empty.mp3") == "empty.mp3: is empty"
    assert error(tmp_path / "noise.wav") == "noise.wav: is not an audio or video file"
    assert error(tmp_path / "noise.mp3") == "noise.mp3: is not an audio or video file"
    assert error(tmp_path / "notes.wav") == "notes.wav: is not an audio or video file"
    assert error(tmp_path / "captions.srt") == "captions.srt: is not an audio or video file"
    assert error(files / "video-only.mp4") == "video-only.mp4: has no audio track"
    assert error(tmp_path / "missing.wav") == "missing.wav: does not exist"
    assert error(tmp_path) == f"{tmp_path.name}: is not a regular file"


def test_truncated_files(files, tmp_path):
    data = (files / "tone.mp3").read_bytes()
    (tmp_path / "half.mp3").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.mp3").write_bytes(data[:300])
    movie = (files / "movie.mp4").read_bytes()  # PyAV writes the index ('moov') last: cut, it is gone
    (tmp_path / "half.mp4").write_bytes(movie[: len(movie) // 2])

    # What decodes is yielded, then the iteration stops like a shorter file's.
    audio = decode(tmp_path / "half.mp3")
    assert len(audio) / SAMPLE_RATE == pytest.approx(LENGTH_S / 2, abs=0.3)
    assert dominant_hz(audio[8000:40000]) == pytest.approx(LOW_HZ, abs=2)
    assert error(tmp_path / "header.mp3") == "header.mp3: is not an audio or video file"
    assert "incomplete MP4" in error(tmp_path / "half.mp4")


def test_a_failure_part_way_yields_the_audio_before_it(files, monkeypatch):
    real, calls = media._samples, []

    def failing(frame):
        calls.append(1)
        if len(calls) > 100:  # MP3 frames are 1152 samples at 44.1 kHz: about 2.6 s in
            raise OSError(5, "Input/output error")
        return real(frame)

    monkeypatch.setattr(media, "_samples", failing)
    got = []
    with pytest.raises(MediaError) as caught:
        for chunk in iter_audio(files / "tone.mp3", chunk_s=1.0):
            got.append(chunk)
    assert str(caught.value).startswith("tone.mp3: decoding failed at 2.6 s: Input/output error")
    assert sum(map(len, got)) == pytest.approx(2.6 * SAMPLE_RATE, abs=0.05 * SAMPLE_RATE)


def test_bad_arguments_fail_at_the_call(files):
    with pytest.raises(ValueError, match="chunk_s"):
        iter_audio(files / "tone.wav", chunk_s=0)
    with pytest.raises(ValueError, match="start_s"):
        iter_audio(files / "tone.wav", start_s=-1.0)


def write_pcm_wav(path: Path, rate: int, samples: np.ndarray) -> Path:
    """A 16-bit mono WAV at any `rate` the header can state (the wave module refuses none either)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def write_mka_that_says_it_lasts(path: Path, audio: np.ndarray, said_s: float) -> Path:
    """FLAC in Matroska whose header (Segment Info: Duration) claims `said_s` seconds, whatever it holds."""
    import struct

    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)
        for start in range(0, len(pcm), 1600):
            frame = av.AudioFrame.from_ndarray(pcm[start : start + 1600].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89")  # the Duration element, in milliseconds (TimestampScale 1 ms)
    assert at > 0 and data[at + 2] == 0x88, "PyAV's muxer writes an 8-byte Duration"
    data[at + 3 : at + 11] = struct.pack(">d", said_s * 1000)
    path.write_bytes(bytes(data))
    return path


def test_a_100_kb_wav_at_1_hz_fails_at_once_with_the_reason(tmp_path):
    # Its header is honest: 50,000 samples at 1 Hz last 13.9 hours, 800 million samples at 16 kHz.
    path = write_pcm_wav(tmp_path / "one-hertz.wav", 1, np.random.default_rng(0).integers(-3000, 3000, 50_000))
    assert path.stat().st_size > 100_000 and probe(path).duration_s == 50_000
    with pytest.raises(MediaError) as caught:
        next(iter_audio(path, chunk_s=1.0))
    assert (
        str(caught.value)
        == "one-hertz.wav: decoding failed at 0.0 s: its sample rate, 1 Hz, is too low for speech audio"
    )


def test_max_s_counts_what_decodes_not_what_the_header_says(tmp_path):
    audio = tone(SAMPLE_RATE)[: 5 * SAMPLE_RATE]
    path = write_mka_that_says_it_lasts(tmp_path / "liar.mka", audio, said_s=1.0)
    assert probe(path).duration_s == pytest.approx(1.0)  # the header's word
    assert sum(map(len, iter_audio(path, chunk_s=1.0))) == len(audio)  # what is there: 5 s
    got = []
    with pytest.raises(media.TooLong) as caught:
        for chunk in iter_audio(path, chunk_s=1.0, max_s=2.5):
            got.append(chunk)
    assert str(caught.value) == "liar.mka: is longer than 2.5 s, the most one file may last"
    assert sum(map(len, got)) == int(2.5 * SAMPLE_RATE)  # everything up to the limit, nothing past it
    np.testing.assert_array_equal(
        np.concatenate(got), np.concatenate(list(iter_audio(path, 1.0)))[: len(np.concatenate(got))]
    )
    # Resumed past the middle, the limit still counts from the file's start.
    with pytest.raises(media.TooLong):
        for _ in iter_audio(path, chunk_s=1.0, start_s=2.0, max_s=2.5):
            pass
    assert sum(map(len, iter_audio(path, chunk_s=1.0, start_s=2.0, max_s=5.0))) == 3 * SAMPLE_RATE
    with pytest.raises(ValueError, match="max_s"):
        iter_audio(path, max_s=0)

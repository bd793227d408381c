import numpy as np
import pytest

from streaming.pcm import AudioFormatError, Resampler, decode_pcm16


def test_decode_pcm16_little_endian():
    samples = decode_pcm16(np.array([0, 16384, -32768], dtype="<i2").tobytes())
    np.testing.assert_allclose(samples, [0.0, 0.5, -1.0])


def test_odd_byte_count_is_a_clear_error():
    with pytest.raises(AudioFormatError, match="even count"):
        decode_pcm16(b"\x00\x01\x02")


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_resampler_keeps_duration_and_pitch(rate):
    seconds, tone = 2.0, 440.0
    t = np.arange(int(seconds * rate)) / rate
    signal = (0.5 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
    resampler = Resampler(rate)
    out = np.concatenate([resampler.process(c) for c in np.array_split(signal, 37)] + [resampler.flush()])
    assert abs(len(out) - 32000) <= 2
    spectrum = np.abs(np.fft.rfft(out[4000:-4000]))
    peak_hz = np.argmax(spectrum) * 16000 / len(out[4000:-4000])
    assert abs(peak_hz - tone) < 2

"""Kaldi log-mel filterbank features in numpy, computed for many streams' frames in one pass.

Same recipe as kaldi-native-fbank with FSMN VAD's options (25 ms hamming frames every 10 ms,
snip_edges, DC removal, pre-emphasis 0.97, 512-point power spectrum, 80 Kaldi mel bins from
20 Hz to Nyquist, natural log floored at float epsilon). Vectorised across every frame of every
stream in a batch, it costs a fraction of calling knf once per stream, and numpy releases the GIL
for the heavy parts, so the event loop keeps running; tests/test_vad_fsmn.py checks it against knf.

How, with numpy alone (its FFT is float64 only and took twice torch's time; a plain DFT matrix,
400 x 514, about as long):
- Pre-emphasis is a filter over the whole signal, so it runs once per signal, not once per
  overlapping frame; only each frame's first sample differs (Kaldi takes it as its own
  predecessor). Removing the frame's mean first is the same as taking 0.03 x the mean off every
  emphasised sample, done after.
- The 512-point DFT is split once (radix 2) into the DFTs of the even and the odd samples, each a
  matrix product (BLAS) over 200 samples for bins 0..128 only: a real signal's other bins mirror
  them. The window and the twiddle factors are folded into those two matrices, and the two halves
  of the spectrum come out as their sum and difference.
- Each half's power goes through the mel weights it reaches (bins 0..128 feed mel bins 0..60,
  the rest 59..79).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPHASIS = 0.97
LOG_FLOOR = np.finfo(np.float32).eps


def _mel(freq: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64]:
    mels: npt.NDArray[np.float64] = 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)
    return mels


def mel_banks() -> npt.NDArray[np.float32]:
    """(FFT_SIZE // 2 + 1, NUM_MEL_BINS) triangular weights on Kaldi's mel scale."""
    num_fft_bins = FFT_SIZE // 2
    mel_low, mel_high = _mel(LOW_FREQ), _mel(SAMPLE_RATE / 2)
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    fft_mels = _mel(np.arange(num_fft_bins) * SAMPLE_RATE / FFT_SIZE)
    weights = np.zeros((FFT_SIZE // 2 + 1, NUM_MEL_BINS), dtype=np.float64)
    for b in range(NUM_MEL_BINS):
        left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
        rising = (fft_mels > left) & (fft_mels <= center)
        falling = (fft_mels > center) & (fft_mels < right)
        weights[:num_fft_bins][rising, b] = (fft_mels[rising] - left) / (center - left)
        weights[:num_fft_bins][falling, b] = (right - fft_mels[falling]) / (right - center)
    return weights.astype(np.float32)


HALF = FRAME_LENGTH // 2  # even (or odd) samples of a frame
HALF_BINS = FFT_SIZE // 4 + 1  # bins 0..128 of a 256-point DFT of real samples


def _half_dfts() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(HALF, 2 * HALF_BINS) each, real parts then imaginary parts: the windowed even samples
    times the first give E[k], the odd samples times the second give W^k O[k] (W = e^(-2 pi i/512)),
    for k = 0..128. Then X[k] = E[k] + W^k O[k], and X[256 - k] is the conjugate of the difference."""
    window = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(FRAME_LENGTH) / (FRAME_LENGTH - 1))
    k = np.arange(HALF_BINS)
    angle = 2 * np.pi * np.outer(np.arange(HALF), k) / (FFT_SIZE // 2)
    twiddled = angle + 2 * np.pi * k / FFT_SIZE

    def real_imag(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.concatenate([np.cos(a), -np.sin(a)], axis=1)

    even = (window[0::2, None] * real_imag(angle)).astype(np.float32)
    odd = (window[1::2, None] * real_imag(twiddled)).astype(np.float32)
    return even, odd


def _mel_of_halves() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], int]:
    """Power of bins 0..128 -> the mel bins they reach; power of bins 256..128 (in that order,
    bin 128 left out: it is in the first half) -> theirs; and the first mel bin of the second."""
    banks = mel_banks()
    high = banks[FFT_SIZE // 2 - np.arange(HALF_BINS)]
    high[-1] = 0.0
    low_used, high_used = np.flatnonzero(banks[:HALF_BINS].any(axis=0)), np.flatnonzero(high.any(axis=0))
    assert low_used[0] == 0 and high_used[-1] == NUM_MEL_BINS - 1 and high_used[0] <= low_used[-1] + 1
    return banks[:HALF_BINS, : low_used[-1] + 1], high[:, high_used[0] :], int(high_used[0])


_EVEN_DFT, _ODD_DFT = _half_dfts()
_MEL_LOW, _MEL_HIGH, _HIGH_FROM = _mel_of_halves()


def frame_count(num_samples: int) -> int:
    return 0 if num_samples < FRAME_LENGTH else 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def split_frames(samples: npt.NDArray[Any]) -> tuple[npt.NDArray[Any], int]:
    """(frames, samples consumed): every complete frame, and how far the next frame starts."""
    count = frame_count(len(samples))
    if count == 0:
        return np.zeros((0, FRAME_LENGTH), dtype=np.float32), 0
    frames = np.lib.stride_tricks.sliding_window_view(samples, FRAME_LENGTH)[::FRAME_SHIFT][:count]
    return frames, count * FRAME_SHIFT


def log_mel(frames: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """(n, 400) int16-scale float frames -> (n, 80) log-mel energies."""
    signal = np.ascontiguousarray(frames, dtype=np.float32).reshape(-1)
    return log_mel_at(signal, np.arange(len(frames), dtype=np.int64) * FRAME_LENGTH)


def log_mel_at(signal: npt.NDArray[np.float32], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """(n, 80) log-mel energies of the 400-sample frames of `signal` (int16-scale floats) that
    begin at `starts` (frames may overlap, as a stream's do, or lie end to end)."""
    if not len(starts):
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float32)
    signal = np.asarray(signal, dtype=np.float32)
    emphasised = np.empty(len(signal) + len(signal) % 2, dtype=np.float32)  # an even length
    emphasised[len(signal) :] = 0.0
    np.multiply(signal[:-1], -PREEMPHASIS, out=emphasised[1 : len(signal)])
    emphasised[1 : len(signal)] += signal[1:]
    # Even and odd samples side by side; a frame's even samples are one of them, by its start's parity.
    halves = np.lib.stride_tricks.sliding_window_view(emphasised.reshape(-1, 2).T, HALF, axis=1)
    parity = starts % 2
    even = halves[parity, starts // 2]  # (n, 200): whole rows, copied fast
    odd = halves[1 - parity, (starts + 1) // 2]
    even[:, 0] = (1.0 - PREEMPHASIS) * signal[starts]  # Kaldi: a frame's first sample is its own predecessor
    # DC removal before pre-emphasis takes (1 - 0.97) * mean off every emphasised sample; the
    # emphasised samples add up to (1 - 0.97) * (sum of the frame) + 0.97 * (last - first sample).
    dc = even.sum(axis=1) + odd.sum(axis=1)
    dc -= PREEMPHASIS * (signal[starts + FRAME_LENGTH - 1] - signal[starts])
    dc /= FRAME_LENGTH
    even -= dc[:, None]
    odd -= dc[:, None]
    even_spectrum, odd_spectrum = even @ _EVEN_DFT, odd @ _ODD_DFT
    low = even_spectrum + odd_spectrum  # bins 0..128
    high = np.subtract(even_spectrum, odd_spectrum, out=odd_spectrum)  # bins 256..128, conjugated
    energies = np.zeros((len(starts), NUM_MEL_BINS), dtype=np.float32)
    for spectrum, weights, first in ((low, _MEL_LOW, 0), (high, _MEL_HIGH, _HIGH_FROM)):
        np.square(spectrum, out=spectrum)
        power = spectrum[:, :HALF_BINS] + spectrum[:, HALF_BINS:]
        energies[:, first : first + weights.shape[1]] += power @ weights
    np.maximum(energies, LOG_FLOOR, out=energies)
    return np.log(energies, out=energies)

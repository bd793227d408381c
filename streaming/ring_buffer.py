"""Fixed-capacity audio history addressed by absolute sample index.

Stored as int16 (the wire format's precision) to halve memory per connection; reads return float32.
"""

from __future__ import annotations

import numpy as np


def to_int16(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).round().astype(np.int16)


class RingBuffer:
    """Keeps the newest `capacity` samples; older ones are overwritten, never reallocated."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._data = np.zeros(capacity, dtype=np.int16)
        self._capacity = capacity
        self._end = 0  # absolute index one past the newest sample

    @property
    def end(self) -> int:
        return self._end

    @property
    def start(self) -> int:
        """Oldest absolute index still held."""
        return max(0, self._end - self._capacity)

    def append(self, samples: np.ndarray) -> None:
        """Float samples in [-1, 1), or int16 samples as they came off the wire."""
        samples = to_int16(samples)
        if len(samples) > self._capacity:
            # Only the newest `capacity` samples can be held; the rest are skipped but counted.
            self._end += len(samples) - self._capacity
            samples = samples[-self._capacity :]
        n = len(samples)
        pos = self._end % self._capacity
        first = min(n, self._capacity - pos)
        self._data[pos : pos + first] = samples[:first]
        self._data[: n - first] = samples[first:]
        self._end += n

    def read(self, start: int, end: int) -> np.ndarray:
        """Copy of samples [start, end); raises if any of them is no longer (or not yet) held."""
        if start < self.start or end > self._end or start > end:
            raise IndexError(f"samples [{start}, {end}) outside buffer [{self.start}, {self._end})")
        n = end - start
        pos = start % self._capacity
        first = min(n, self._capacity - pos)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._data[pos : pos + first]
        out[first:] = self._data[: n - first]
        out *= 1.0 / 32768.0
        return out

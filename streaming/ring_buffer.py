"""Bounded audio history addressed by absolute sample index.

Stored as int16 (the wire format's precision) in blocks of one second, allocated as audio arrives
and freed once the owner says it will never read them again (`release_before`), or once they fall
out of the newest `capacity` samples. A connection sitting in silence holds a second or two, not
the whole capacity: memory follows what is actually needed (the open segment), which is what lets
hundreds of connections share a small machine. Reads return float32 in [-1, 1), or int16.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from streaming.events import Audio, Pcm16, Samples

BLOCK_SAMPLES = 16000  # one second at 16 kHz: 32 KB


def to_int16(samples: Samples) -> Pcm16:
    if samples.dtype == np.int16:
        return samples.astype(np.int16, copy=False)  # the same array (typed as int16), no copy
    scaled: npt.NDArray[np.floating[Any]] = np.multiply(np.clip(samples, -1.0, 32767 / 32768), 32768.0)
    return scaled.round().astype(np.int16)


class RingBuffer:
    """Keeps at least the newest `capacity` samples that were not released."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self._capacity = capacity
        self._blocks: deque[Pcm16] = deque()
        self._first = 0  # absolute index of the first sample of self._blocks[0]
        self._end = 0  # absolute index one past the newest sample
        self._released = 0  # samples before this are never read again

    @property
    def end(self) -> int:
        return self._end

    @property
    def start(self) -> int:
        """Oldest absolute index still held."""
        return max(self._first, self._released, self._end - self._capacity)

    @property
    def bytes_held(self) -> int:
        return len(self._blocks) * BLOCK_SAMPLES * 2

    def append(self, samples: Samples) -> None:
        """Float samples in [-1, 1), or int16 samples as they came off the wire."""
        samples = to_int16(samples)
        if len(samples) > self._capacity:
            # Only the newest `capacity` samples can be held; the rest are skipped but counted.
            skipped = len(samples) - self._capacity
            self._drop_all(self._end + skipped)
            samples = samples[skipped:]
        written = 0
        while written < len(samples):
            filled = self._end - self._first
            if filled == len(self._blocks) * BLOCK_SAMPLES:  # every block is full
                self._blocks.append(np.empty(BLOCK_SAMPLES, dtype=np.int16))
            offset = filled - (len(self._blocks) - 1) * BLOCK_SAMPLES
            n = min(len(samples) - written, BLOCK_SAMPLES - offset)
            self._blocks[-1][offset : offset + n] = samples[written : written + n]
            written += n
            self._end += n
        self._trim()

    def release_before(self, sample: int) -> None:
        """The owner will never read samples before `sample`; whole blocks before it are freed."""
        self._released = max(self._released, min(sample, self._end))
        self._trim()

    def read(self, start: int, end: int) -> Audio:
        """Copy of samples [start, end) as float32; raises if any of them is no longer (or not yet) held."""
        out = self.read_int16(start, end).astype(np.float32)
        out *= 1.0 / 32768.0
        return out

    def read_int16(self, start: int, end: int) -> Pcm16:
        if start < self.start or end > self._end or start > end:
            raise IndexError(f"samples [{start}, {end}) outside buffer [{self.start}, {self._end})")
        out = np.empty(end - start, dtype=np.int16)
        position = start
        while position < end:
            block, offset = divmod(position - self._first, BLOCK_SAMPLES)
            n = min(end - position, BLOCK_SAMPLES - offset)
            out[position - start : position - start + n] = self._blocks[block][offset : offset + n]
            position += n
        return out

    def _trim(self) -> None:
        keep_from = self.start
        while self._blocks and self._first + BLOCK_SAMPLES <= keep_from:
            self._blocks.popleft()
            self._first += BLOCK_SAMPLES

    def _drop_all(self, new_end: int) -> None:
        """Forget everything held; the next sample written has index `new_end`."""
        self._blocks.clear()
        self._end = new_end
        self._first = new_end

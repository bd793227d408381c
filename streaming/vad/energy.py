"""Energy gate: per-frame level in dBFS against a fixed floor."""

from __future__ import annotations

import numpy as np


def frame_levels_dbfs(frames: np.ndarray) -> np.ndarray:
    """Levels of each row of a (frames, samples) array of floats or int16, vectorised."""
    x = frames.astype(np.float32)
    power = np.einsum("ij,ij->i", x, x) / frames.shape[1]
    if frames.dtype == np.int16:
        power /= 32768.0**2
    return 10.0 * np.log10(np.maximum(power, 1e-12))


class EnergyGate:
    def __init__(self, floor_dbfs: float) -> None:
        self.floor_dbfs = floor_dbfs

    def passes(self, level_dbfs: float) -> bool:
        return level_dbfs >= self.floor_dbfs

"""Energy gate: per-frame level in dBFS against a fixed floor."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streaming.events import Samples


def frame_levels_dbfs(frames: Samples) -> npt.NDArray[np.float32]:
    """Levels of each row of a (frames, samples) array of floats or int16, vectorised."""
    x = frames.astype(np.float32)
    power = np.einsum("ij,ij->i", x, x) / frames.shape[1]
    if frames.dtype == np.int16:
        power /= 32768.0**2
    levels: npt.NDArray[np.float32] = 10.0 * np.log10(np.maximum(power, 1e-12))
    return levels


class EnergyGate:
    def __init__(self, floor_dbfs: float) -> None:
        self.floor_dbfs = floor_dbfs

    def passes(self, level_dbfs: float) -> bool:
        return level_dbfs >= self.floor_dbfs

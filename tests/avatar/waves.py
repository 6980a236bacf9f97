"""How the avatar tests judge a nystagmus read back: the sine at its frequency fitted through the readings."""

from __future__ import annotations

import math

import numpy as np


def sine_fit(t: np.ndarray, values: np.ndarray, hz: float) -> tuple[float, float]:
    """(amplitude, level) of the least-squares sine at ``hz`` plus a constant through ``values`` at times ``t`` (s)."""
    basis = np.stack([np.sin(2 * math.pi * hz * t), np.cos(2 * math.pi * hz * t), np.ones_like(t)], axis=1)
    (s, c, level), *_ = np.linalg.lstsq(basis, values, rcond=None)
    return math.hypot(s, c), float(level)

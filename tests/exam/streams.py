"""Synthetic eye-movement streams with known answers, at 30 frames a second, for the exam tests."""

from __future__ import annotations

import numpy as np

from proxy.exam.targets import TargetSchedule
from proxy.params import MaskParams

FPS = 30.0


def times(seconds: float, start: float = 0.0) -> np.ndarray:
    return start + np.arange(int(round(seconds * FPS))) / FPS


def jerk_nystagmus(t: np.ndarray, frequency: float, peak_to_peak: float) -> np.ndarray:
    """A sawtooth: slow phase drifting towards + at constant speed, fast phase back within one frame."""
    return peak_to_peak * ((frequency * t) % 1.0 - 0.5)


def pursuit_eye(schedule: TargetSchedule, t: np.ndarray, gain: float, axis: int = 0, catch_up_deg: float = 3.0,
                saccade_s: float = 0.03) -> tuple[np.ndarray, int]:
    """An eye pursuing with ``gain`` and catching up by a saccade whenever it trails by ``catch_up_deg``.

    Simulated at 1 kHz and sampled at ``t``; returns the eye's position on ``axis`` and the number of
    catch-up saccades made.
    """
    fine = np.arange(t[0], t[-1] + 1e-3, 1e-3)
    target = schedule.position(fine)[:, axis]
    velocity = np.nan_to_num(schedule.velocity(fine)[:, axis])
    eye = np.empty_like(fine)
    eye[0] = np.nan_to_num(target[0])
    saccades, remaining, step = 0, 0, 0.0
    for i in range(1, fine.size):
        eye[i] = eye[i - 1] + gain * velocity[i - 1] * 1e-3
        if remaining > 0:
            eye[i] += step
            remaining -= 1
        elif (np.isfinite(target[i]) and abs(target[i] - eye[i]) > catch_up_deg
              and velocity[i] * (target[i] - eye[i]) > 0):
            remaining = int(saccade_s / 1e-3)
            step = (target[i] - eye[i]) / remaining
            saccades += 1
    return np.interp(t, fine, eye), saccades


def stream(t: np.ndarray, **columns: np.ndarray | float | None) -> list[MaskParams]:
    """MaskParams per time with the given per-field values; NaN (or None) in a field makes it None (a gap)."""
    out = []
    for i, ti in enumerate(t):
        params = MaskParams(frame=i, t=float(ti), face=True)
        for name, values in columns.items():
            value = values if values is None or np.isscalar(values) else values[i]
            setattr(params, name, None if value is None or not np.isfinite(value) else float(value))
        out.append(params)
    return out

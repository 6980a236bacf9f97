"""Per-eye calibration: each eye's measured gaze mapped to degrees of visual angle of what it looks at.

A webcam tracker's gaze angle differs from the true direction of the eye by an
offset and a gain that vary from person to person (issue 15 measured straight-eyed
people reading -7 to -20 degrees of R - L). Clinical video-oculography calibrates each
eye on its own, and so does this: the patient covers one eye with a hand (the
tracker marks it not measurable), the other fixates the five points of
:func:`~proxy.exam.targets.calibration_targets`; then the eyes swap. Per eye an
affine map is fitted by least squares::

    [yaw_target, pitch_target] = M @ [yaw_measured, pitch_measured, 1]        (M is 2 x 3)

on the median gaze of each point's fixation (from ``SETTLE_S`` after the dot
arrives). The residual error is the fit's RMS distance from the targets, corrected
for the fit's degrees of freedom (5 points, 3 parameters per axis); the precision
is the RMS spread of the samples within a fixation.

A strabismic eye is calibrated while it is the one fixating, so under binocular
viewing its deviation becomes measurable in degrees (and prism dioptres). The
calibration holds 2 x 3 numbers per eye and lives only in the consult's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from proxy.exam.targets import TargetSchedule
from proxy.exam.traces import EYES, Traces, other

#: Seconds after the dot arrives before the fixation counts (the saccade to it and settling).
SETTLE_S = 0.6
#: Fewest samples of a point's fixation that count.
MIN_SAMPLES = 5
#: Fewest fixated points for a fit (three would fit exactly, with no residual to report).
MIN_POINTS = 4
#: Fraction of frames with a face in which the other eye must be not measurable (covered).
MIN_COVERED = 0.5
#: Plausible range of the fitted gain on each axis (degrees of visual angle per tracker degree).
GAIN_RANGE = (0.3, 3.0)


#: What a doctor should know about a calibration.
CAVEAT = ("Valid while the patient sits as during the calibration, with the same glasses: the targets' angles come "
          "from the screen's size and the viewing distance, so moving closer or further, or turning the head, "
          "shifts the map; calibrate again after such a change. The residual is the fit's error at the five points; "
          "between and beyond them the error can be larger.")


class CalibrationError(ValueError):
    """A calibration that could not be fitted, with what the patient or doctor can do about it."""


@dataclass(frozen=True)
class EyeCalibration:
    """One eye's map from measured gaze to degrees of visual angle, with its error."""

    eye: str
    matrix: np.ndarray
    residual_deg: float
    precision_deg: float
    points: int
    covered_fraction: float

    def apply(self, gaze: np.ndarray) -> np.ndarray:
        """(n, 2) measured yaw, pitch (deg) to degrees of visual angle; NaN stays NaN."""
        gaze = np.asarray(gaze, dtype=float).reshape(-1, 2)
        return gaze @ self.matrix[:, :2].T + self.matrix[:, 2]

    def to_json(self) -> dict[str, object]:
        return {"eye": self.eye, "calibrated": True, "residual_deg": round(self.residual_deg, 2),
                "precision_deg": round(self.precision_deg, 2), "points": self.points,
                "gain_yaw": round(float(self.matrix[0, 0]), 3), "gain_pitch": round(float(self.matrix[1, 1]), 3),
                "other_eye_covered": round(self.covered_fraction, 2),
                "units": {"residual_deg": "deg of visual angle", "precision_deg": "deg of visual angle"},
                "caveat": CAVEAT}


def fixation_medians(traces: Traces, schedule: TargetSchedule, eye: str, origin: float = 0.0
                     ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per held point with enough samples: (target deg, median gaze deg, RMS spread deg)."""
    out = []
    gaze = traces.gaze(eye)
    t = traces.t - origin
    for segment in schedule.segments:
        if segment.moving:
            continue
        settle = min(SETTLE_S, 0.5 * (segment.end_s - segment.start_s))
        use = (t >= segment.start_s + settle) & (t < segment.end_s) & np.isfinite(gaze).all(axis=1)
        if use.sum() < MIN_SAMPLES:
            continue
        samples = gaze[use]
        median = np.median(samples, axis=0)
        spread = float(np.sqrt(np.mean(np.sum((samples - median) ** 2, axis=1))))
        out.append((np.array([segment.yaw, segment.pitch]), median, spread))
    return out


def fit_eye(traces: Traces, schedule: TargetSchedule, eye: str, origin: float = 0.0,
            require_cover: bool = True) -> EyeCalibration:
    """Fit one eye's map from a calibration run (``traces`` times minus ``origin`` = schedule times)."""
    if eye not in EYES:
        raise ValueError(f"eye must be right or left, not {eye!r}")
    window = traces.between(origin, origin + schedule.duration_s)
    face = window["face"] == 1
    covered = float(np.mean(~np.isfinite(window.gaze(other(eye))[face]).any(axis=1))) if face.any() else 0.0
    if require_cover and covered < MIN_COVERED:
        raise CalibrationError(f"the {other(eye)} eye was visible in {100 * (1 - covered):.0f}% of frames: "
                               f"cover it with a hand and repeat")
    points = fixation_medians(window, schedule, eye, origin)
    if len(points) < MIN_POINTS:
        raise CalibrationError(f"the {eye} eye was measured at {len(points)} of {len(schedule.segments)} points: "
                               f"repeat facing the camera in good light")
    targets = np.array([p[0] for p in points])
    measured = np.array([p[1] for p in points])
    design = np.column_stack([measured, np.ones(len(points))])
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    matrix = solution.T
    gains = matrix[0, 0], matrix[1, 1]
    if not all(GAIN_RANGE[0] <= g <= GAIN_RANGE[1] for g in gains):
        raise CalibrationError(f"the {eye} eye did not follow the dots (gain {gains[0]:.2f} across, "
                               f"{gains[1]:.2f} up-down): repeat")
    errors = design @ solution - targets
    dof = max(len(points) - 3, 1)
    residual = float(np.sqrt(np.sum(errors ** 2) / dof))
    precision = float(np.sqrt(np.mean([p[2] ** 2 for p in points])))
    return EyeCalibration(eye, matrix, residual, precision, len(points), covered)


class Calibration:
    """The consult's per-eye calibrations, in memory only; an eye without one stays in tracker degrees."""

    def __init__(self) -> None:
        self.eyes: dict[str, EyeCalibration] = {}

    def set(self, calibration: EyeCalibration) -> None:
        self.eyes[calibration.eye] = calibration

    def clear(self) -> None:
        self.eyes.clear()

    def is_calibrated(self, eye: str) -> bool:
        return eye in self.eyes

    def residual_deg(self, eye: str) -> float | None:
        return self.eyes[eye].residual_deg if eye in self.eyes else None

    def apply(self, traces: Traces) -> Traces:
        """``traces`` with each calibrated eye's gaze in degrees of visual angle (eyes already mapped are kept)."""
        for eye, calibration in self.eyes.items():
            if eye in traces.calibrated:
                continue
            traces = traces.with_gaze(eye, calibration.apply(traces.gaze(eye)), calibrated=True)
        return traces

    def to_json(self) -> dict[str, object]:
        return {eye: (self.eyes[eye].to_json() if eye in self.eyes else {"eye": eye, "calibrated": False})
                for eye in EYES}

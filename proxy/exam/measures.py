"""The clinical measures, from timestamped parameter streams and, for the guided tests, their target schedules.

Each function takes :class:`~proxy.exam.traces.Traces` (gaps are NaN) and
returns results that carry their numbers, units and the limits of a webcam
measurement in plain words (``to_json``). Nothing is guessed: an eye without
enough measured samples gives ``None`` values, and the nystagmus detector claims
nothing below its confidence. Times of a guided test are schedule times, that is
trace time minus ``origin`` (the moment the dot started).

How each is measured:

* pursuit gain: the eye's frame-to-frame displacement regressed (through zero)
  on the target's, after removing saccades (displacements more than 4 robust
  SDs, and at least :data:`MIN_SACCADE_DEG`, away from the smooth movement) and
  one frame either side; the first :data:`PURSUIT_SKIP_S` of each sweep
  (pursuit initiation) is left out. Catch-up saccades go with the target,
  back-up saccades against it.
* saccades: per jump of the dot, the eye's first frame-to-frame movement
  above the saccade threshold towards the new point, 80-800 ms after the jump;
  latency to the moment the eye has covered 10% of its movement (linear between
  frames); gain is the movement's size over the jump's.
* fixation stability: SD of yaw and pitch and the bivariate contour ellipse area
  holding 68.2% of samples, BCEA = 2 k pi sd_yaw sd_pitch sqrt(1 - rho^2) with
  k = -ln(1 - 0.682).
* deviation: right minus left calibrated gaze, median over the last 2 s while
  both eyes hold still, in prism dioptres 100 tan(theta); R - L yaw > 0 means the
  eyes converge (eso), < 0 diverge (exo); R - L pitch > 0 means the right eye is
  higher (right hyper, the same as left hypo).
* nystagmus: over the last 4 s per eye, the strongest oscillation of a
  Hann-weighted spectrum of gaze (yaw and pitch together) between 1 and 8 Hz,
  refined by fitting a periodic waveform (the frequency and its harmonics up to
  12 Hz, at most 4) on top of a quadratic trend. Confidence is the share of the
  non-trend movement that waveform explains; amplitude is its peak-to-peak size
  along its main direction. Claimed only with confidence >= :data:`MIN_CONFIDENCE`
  and amplitude >= :data:`MIN_NYSTAGMUS_DEG`.
* lids: medians of MRD1, MRD2 and their sum (the palpebral fissure height) over
  the last 2 s of open-eye frames; ptosis flagged for an eye when, in at least 90%
  of those frames across 2 s, its MRD1 < 2 mm or is more than 1 mm below the other's.
* blinks: :class:`proxy.tracking.blinks.BlinkCounter`'s rule, plus how far the lid
  fell from the recent open level; incomplete below 80%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from proxy.exam.calibration import Calibration
from proxy.exam.targets import Step, TargetSchedule
from proxy.exam.traces import EYES, Traces, other
from proxy.tracking.blinks import BlinkCounter

#: Smallest frame-to-frame jump (deg) taken as a saccade, whatever the noise.
MIN_SACCADE_DEG = 1.0
#: Saccade threshold in robust SDs of the frame-to-frame movement around the smooth one.
SACCADE_SDS = 4.0
#: Seconds of each pursuit sweep left out at its start (pursuit initiation).
PURSUIT_SKIP_S = 0.5
#: Earliest and latest saccade onset after a jump of the dot that counts as a response (s).
MIN_LATENCY_S, MAX_LATENCY_S = 0.08, 0.8
#: Share of samples needed (against the frame rate) for a measure to say anything.
MIN_VALID = 0.5
#: BCEA's k for 68.2% of samples.
BCEA_K = -math.log(1 - 0.682)
#: Window of the live deviation and lid readouts (s), and of the nystagmus detector (s).
DEVIATION_WINDOW_S, LID_WINDOW_S, NYSTAGMUS_WINDOW_S = 2.0, 2.0, 4.0
#: Largest gaze SD (deg) over the window at which the eyes count as fixating.
MAX_FIXATION_SD = 2.0
#: Nystagmus search band (Hz), highest harmonic fitted (Hz), at most this many harmonics.
NYSTAGMUS_BAND = (1.0, 8.0)
MAX_HARMONIC_HZ, MAX_HARMONICS = 12.0, 4
#: Points of the zero-padded spectrum (a 4 s window at 30 fps: 0.015 Hz per bin).
SPECTRUM_SIZE = 2048
#: Offsets (Hz) around the spectral peak at which the waveform is fitted; the best fit is kept.
REFINE_HZ = (-0.02, -0.01, 0.0, 0.01, 0.02)
#: Below this confidence or this peak-to-peak amplitude (deg) no nystagmus is claimed.
MIN_CONFIDENCE, MIN_NYSTAGMUS_DEG = 0.5, 0.5
#: Fast-phase to slow-phase speed ratio above which a nystagmus is jerk rather than pendular.
JERK_RATIO = 1.5
#: Ptosis thresholds (mm) and the share of frames over the window that must meet them.
PTOSIS_MRD1_MM, PTOSIS_ASYMMETRY_MM, PTOSIS_SHARE = 2.0, 1.0, 0.9
#: A blink whose lid falls less than this share of the way is incomplete.
COMPLETE_FALL = 0.8
#: Blinks seen closed in fewer frames than this are not classified (the bottom may fall between frames).
MIN_CLOSED_SAMPLES = 3
#: An eye is open (for lid readouts) above this share of its recent 90th-percentile aperture.
OPEN_SHARE = 0.6

WEBCAM = ("Measured from a webcam at about 30 frames a second through a face tracker, not a clinical eye "
          "tracker: compare eyes, tests and visits rather than reading single values against clinical norms. ")


def _clean(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float | np.floating):
        return round(float(value), 3) if math.isfinite(value) else None
    if isinstance(value, tuple | list):
        return [_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class Result:
    """A measure's numbers; ``to_json`` adds its name, the units of its fields and its caveat."""

    MEASURE: ClassVar[str] = ""
    UNITS: ClassVar[dict[str, str]] = {}
    CAVEAT: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"measure": self.MEASURE}
        out.update({f.name: _clean(getattr(self, f.name)) for f in fields(self)})
        out["units"] = dict(self.UNITS)
        out["caveat"] = WEBCAM + self.CAVEAT
        return out


def _robust_sd(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    if values.size < 3:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def _steps(t: np.ndarray, x: np.ndarray, frame: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample-to-sample displacement and its duration; NaN across gaps longer than 2.5 frames."""
    dx = np.diff(x)
    dt = np.diff(t)
    bad = ~np.isfinite(dx) | (dt <= 0) | (dt > 2.5 * frame)
    return np.where(bad, np.nan, dx), np.where(bad, np.nan, dt)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True."""
    out, start = [], None
    for i, flag in enumerate(mask):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(mask) - 1))
    return out


def saccade_threshold(residual: np.ndarray) -> float:
    """Frame-to-frame movement (deg) beyond the smooth one that counts as a saccade."""
    sd = _robust_sd(residual)
    return max(MIN_SACCADE_DEG, SACCADE_SDS * sd) if math.isfinite(sd) else MIN_SACCADE_DEG


def _saccadic(residual: np.ndarray) -> tuple[np.ndarray, float]:
    """Frame intervals in a saccade, from the movement beyond the smooth one over one frame and over two.

    A saccade of a few degrees lasts 20-40 ms, so at 30 fps it falls in one frame interval or is split over
    two; the two-frame sum sees a split one whole, with the same noise as one frame.
    """
    threshold = saccade_threshold(residual)
    flagged = np.abs(np.nan_to_num(residual)) > threshold
    pairs = residual[:-1] + residual[1:]
    pair_threshold = saccade_threshold(pairs)
    split = np.abs(np.nan_to_num(pairs)) > pair_threshold
    flagged[:-1] |= split
    flagged[1:] |= split
    return flagged, threshold


# ---- smooth pursuit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PursuitResult(Result):
    MEASURE: ClassVar[str] = "pursuit"
    UNITS: ClassVar[dict[str, str]] = {"gain": "eye velocity / target velocity", "catch_up_saccades": "count",
                                       "back_up_saccades": "count", "saccade_threshold_deg": "deg per frame",
                                       "valid_fraction": "share of frames"}
    CAVEAT: ClassVar[str] = (
        "Gain is smooth eye velocity over target velocity with saccades removed. Uncalibrated, the tracker's own "
        "scale (which varies between people) multiplies it: calibrate first. Saccades smaller than the threshold "
        "(about 1-2 deg at 30 fps) are not seen. Head movement during the test lowers the gain.")

    eye: str
    axis: str
    gain: float | None
    catch_up_saccades: int | None
    back_up_saccades: int | None
    saccade_threshold_deg: float | None
    valid_fraction: float
    calibrated: bool


def _pursuit_one(eye: str, axis_name: str, s: np.ndarray, x: np.ndarray, schedule: TargetSchedule, axis: int,
                 frame: float, calibrated: bool, expected: float) -> PursuitResult:
    measured = np.isfinite(x)
    valid = float(measured.sum()) / max(expected, 1.0)
    s, x = s[measured], x[measured]  # a missing frame is bridged: its neighbours' displacement still counts
    dx, _ = _steps(s, x, frame)
    target = np.diff(schedule.position(s)[:, axis])
    good = np.isfinite(dx) & np.isfinite(target)
    if valid < MIN_VALID or good.sum() < 10 or not np.any(target[good] != 0):
        return PursuitResult(eye, axis_name, None, None, None, None, min(valid, 1.0), calibrated)
    gain, threshold, saccadic = 1.0, MIN_SACCADE_DEG, np.zeros_like(good)
    for _ in range(3):
        saccadic, threshold = _saccadic(np.where(good, dx - gain * target, np.nan))
        near = saccadic.copy()  # and one frame either side: the saccade's start and end smear into them
        near[1:] |= saccadic[:-1]
        near[:-1] |= saccadic[1:]
        use = good & ~near
        denominator = float(np.sum(target[use] ** 2))
        if denominator <= 0:
            break
        gain = float(np.sum(dx[use] * target[use]) / denominator)
    catch_up = back_up = 0
    for first, last in _runs(saccadic):
        moved = float(np.nansum(dx[first:last + 1]))
        direction = float(np.nansum(target[first:last + 1]))
        if direction == 0:
            continue
        if np.sign(moved) == np.sign(direction):
            catch_up += 1
        else:
            back_up += 1
    return PursuitResult(eye, axis_name, gain, catch_up, back_up, threshold, min(valid, 1.0), calibrated)


def pursuit_gain(traces: Traces, schedule: TargetSchedule, origin: float = 0.0,
                 calibration: Calibration | None = None) -> list[PursuitResult]:
    """Per eye and per sweep (horizontal, vertical): pursuit gain and the catch-up saccades."""
    if calibration is not None:
        traces = calibration.apply(traces)
    frame = traces.frame_interval()
    out = []
    for segment in schedule.segments:
        if not segment.moving:
            continue
        axis = 0 if abs(segment.amp_yaw) >= abs(segment.amp_pitch) else 1
        start = segment.start_s + PURSUIT_SKIP_S
        window = traces.between(origin + start, origin + segment.end_s)
        s = window.t - origin
        expected = (segment.end_s - start) / frame
        for eye in EYES:
            out.append(_pursuit_one(eye, "horizontal" if axis == 0 else "vertical", s, window.gaze(eye)[:, axis],
                                    schedule, axis, frame, eye in traces.calibrated, expected))
    return out


# ---- saccades ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaccadeResult(Result):
    MEASURE: ClassVar[str] = "saccades"
    UNITS: ClassVar[dict[str, str]] = {"latency_ms": "ms (median)", "latency_iqr_ms": "ms",
                                       "gain": "eye movement / target jump (median)", "jumps": "count",
                                       "measured": "count", "anticipations": "count", "missed": "count",
                                       "wrong_direction": "count"}
    CAVEAT: ClassVar[str] = (
        "At 30 frames a second latency is resolved to about 33 ms, and it includes the delay between the dot "
        "appearing on the patient's screen and the camera frame reaching the proxy (tens of ms): compare eyes "
        "and visits rather than reading it against norms. Uncalibrated, the tracker's scale multiplies the gain. "
        "Peak velocity cannot be measured at this frame rate.")

    eye: str
    axis: str
    latency_ms: float | None
    latency_iqr_ms: float | None
    gain: float | None
    jumps: int
    measured: int
    anticipations: int
    missed: int
    wrong_direction: int
    calibrated: bool


def _interpolated_crossing(s: np.ndarray, x: np.ndarray, start: int, stop: int, level: float, sign: float
                           ) -> float | None:
    """First time in samples [start, stop] at which sign * (x - level) turns non-negative (linear between)."""
    for k in range(max(start, 0), min(stop, len(x) - 1)):
        a, b = sign * (x[k] - level), sign * (x[k + 1] - level)
        if math.isfinite(a) and math.isfinite(b) and a < 0 <= b:
            return float(s[k] + (s[k + 1] - s[k]) * (-a) / (b - a))
    return None


def _saccades_one(eye: str, axis: int, s: np.ndarray, x: np.ndarray, steps: list[Step], frame: float,
                  calibrated: bool) -> SaccadeResult:
    measured = np.isfinite(x)
    s, x = s[measured], x[measured]  # a missing frame is bridged
    dx, _ = _steps(s, x, frame)
    threshold = saccade_threshold(dx)
    latencies, gains = [], []
    anticipations = missed = wrong = 0
    times = [step.t for step in steps]
    for n, step in enumerate(steps):
        sign = float(np.sign(step.size))
        next_t = times[n + 1] if n + 1 < len(times) else step.t + 2 * MAX_LATENCY_S
        before = (s >= step.t - 0.3) & (s < step.t + MIN_LATENCY_S) & np.isfinite(x)
        if before.sum() < 3:
            missed += 1
            continue
        baseline = float(np.median(x[before]))
        early = np.nonzero((s[:-1] >= step.t - 0.1) & (s[:-1] < step.t + MIN_LATENCY_S - frame)
                           & (np.abs(np.nan_to_num(dx)) > threshold))[0]
        if early.size:
            anticipations += 1
            continue
        window = np.nonzero((s[:-1] >= step.t + MIN_LATENCY_S - frame) & (s[:-1] < min(step.t + MAX_LATENCY_S,
                                                                                         next_t)))[0]
        moving = [i for i in window if math.isfinite(dx[i]) and abs(dx[i]) > threshold]
        if not moving:
            missed += 1
            continue
        first = moving[0]
        if np.sign(dx[first]) != sign:
            wrong += 1
            continue
        last = first
        while last + 1 < len(dx) and math.isfinite(dx[last + 1]) and sign * dx[last + 1] > threshold / 2:
            last += 1
        landing_samples = [x[k] for k in range(last + 1, min(last + 4, len(x)))
                           if math.isfinite(x[k]) and s[k] < next_t]
        if not landing_samples:
            missed += 1
            continue
        landing = float(np.median(landing_samples))
        level = baseline + 0.1 * (landing - baseline)
        onset = _interpolated_crossing(s, x, first - 1, last + 1, level, sign)
        if onset is None:
            missed += 1
            continue
        latencies.append(onset - step.t)
        gains.append((landing - baseline) / step.size)
    axis_name = "horizontal" if axis == 0 else "vertical"
    if not latencies:
        return SaccadeResult(eye, axis_name, None, None, None, len(steps), 0, anticipations, missed, wrong, calibrated)
    q1, q3 = np.percentile(latencies, [25, 75])
    return SaccadeResult(eye, axis_name, 1000 * float(np.median(latencies)), 1000 * float(q3 - q1),
                         float(np.median(gains)), len(steps), len(latencies), anticipations, missed, wrong, calibrated)


def saccade_metrics(traces: Traces, schedule: TargetSchedule, origin: float = 0.0,
                    calibration: Calibration | None = None) -> list[SaccadeResult]:
    """Per eye and per axis with jumps: latency and amplitude gain of the saccades to the dot's jumps."""
    if calibration is not None:
        traces = calibration.apply(traces)
    frame = traces.frame_interval()
    window = traces.between(origin, origin + schedule.duration_s + MAX_LATENCY_S)
    s = window.t - origin
    out = []
    steps = schedule.steps()
    for axis in (0, 1):
        on_axis = [step for step in steps if step.axis == axis]
        if not on_axis:
            continue
        for eye in EYES:
            out.append(_saccades_one(eye, axis, s, window.gaze(eye)[:, axis], on_axis, frame,
                                     eye in traces.calibrated))
    return out


# ---- fixation stability --------------------------------------------------------------------------


@dataclass(frozen=True)
class FixationResult(Result):
    MEASURE: ClassVar[str] = "fixation"
    UNITS: ClassVar[dict[str, str]] = {"bcea_deg2": "deg^2 (68.2% ellipse)", "sd_yaw_deg": "deg",
                                       "sd_pitch_deg": "deg", "samples": "count"}
    CAVEAT: ClassVar[str] = (
        "Includes the tracker's own jitter, so a steady eye reads less stable than on a clinical eye tracker; "
        "microsaccades and drifts under about a degree are below the tracker's resolution.")

    eye: str
    bcea_deg2: float | None
    sd_yaw_deg: float | None
    sd_pitch_deg: float | None
    samples: int
    calibrated: bool


def bcea(yaw: np.ndarray, pitch: np.ndarray) -> float:
    """Bivariate contour ellipse area (deg^2) holding 68.2% of the samples."""
    sx, sy = float(np.std(yaw, ddof=1)), float(np.std(pitch, ddof=1))
    rho = float(np.corrcoef(yaw, pitch)[0, 1]) if sx > 0 and sy > 0 else 0.0
    return 2 * BCEA_K * math.pi * sx * sy * math.sqrt(max(0.0, 1 - rho ** 2))


def fixation_stability(traces: Traces, start: float | None = None, end: float | None = None,
                       calibration: Calibration | None = None) -> list[FixationResult]:
    """Per eye: BCEA and the SD of gaze over [start, end) (trace times; default all)."""
    if calibration is not None:
        traces = calibration.apply(traces)
    if start is not None or end is not None:
        traces = traces.between(-math.inf if start is None else start, math.inf if end is None else end)
    expected = traces.span() / traces.frame_interval() + 1 if len(traces) else 0.0
    out = []
    for eye in EYES:
        gaze = traces.gaze(eye)
        gaze = gaze[np.isfinite(gaze).all(axis=1)]
        if len(gaze) < 10 or len(gaze) < MIN_VALID * expected:
            out.append(FixationResult(eye, None, None, None, len(gaze), eye in traces.calibrated))
            continue
        out.append(FixationResult(eye, bcea(gaze[:, 0], gaze[:, 1]), float(np.std(gaze[:, 0], ddof=1)),
                                  float(np.std(gaze[:, 1], ddof=1)), len(gaze), eye in traces.calibrated))
    return out


# ---- deviation between the eyes ------------------------------------------------------------------


def prism_dioptres(degrees: float) -> float:
    """An angle as prism dioptres: 100 tan(theta)."""
    return 100 * math.tan(math.radians(degrees))


def horizontal_name(r_minus_l: float) -> str:
    """R - L gaze yaw > 0: the eyes converge (eso); < 0: diverge (exo)."""
    return "eso" if r_minus_l > 0 else "exo"


def vertical_name(r_minus_l: float) -> str:
    """R - L gaze pitch > 0: the right eye is higher (right hyper = left hypo)."""
    return "right hyper (left hypo)" if r_minus_l > 0 else "left hyper (right hypo)"


def combined_error_pd(calibration: Calibration) -> float | None:
    """The deviation's error (prism dioptres) from both eyes' calibration residuals."""
    residuals = [calibration.residual_deg(eye) for eye in EYES]
    if None in residuals:
        return None
    return prism_dioptres(math.hypot(*residuals))  # type: ignore[arg-type]


def _named(degrees: float, error_pd: float, name: Any) -> tuple[float, str]:
    pd = abs(prism_dioptres(degrees))
    return pd, (name(degrees) if pd > error_pd else "none within error")


@dataclass(frozen=True)
class DeviationResult(Result):
    MEASURE: ClassVar[str] = "deviation"
    UNITS: ClassVar[dict[str, str]] = {"horizontal_pd": "prism dioptres", "vertical_pd": "prism dioptres",
                                       "horizontal_deg": "deg, right minus left", "vertical_deg":
                                       "deg, right minus left", "error_pd": "prism dioptres", "samples": "count"}
    CAVEAT: ClassVar[str] = (
        "Only with both eyes calibrated one at a time under cover, averaged over the last 2 s while both eyes "
        "hold still; the error combines the two calibrations' residuals. This is the manifest deviation under "
        "binocular viewing: a latent deviation (phoria) held by fusion is not seen, since no eye is covered, "
        "and torsion is not measured.")

    horizontal_pd: float | None
    horizontal: str | None
    vertical_pd: float | None
    vertical: str | None
    horizontal_deg: float | None
    vertical_deg: float | None
    error_pd: float | None
    samples: int
    calibrated: bool
    reason: str | None


def deviation(traces: Traces, calibration: Calibration, window_s: float = DEVIATION_WINDOW_S) -> DeviationResult:
    """The manifest deviation between the eyes over the last ``window_s``, in prism dioptres, named."""
    calibrated = all(calibration.is_calibrated(eye) for eye in EYES)

    def nothing(reason: str, samples: int = 0) -> DeviationResult:
        return DeviationResult(None, None, None, None, None, None, None, samples, calibrated, reason)

    if not calibrated:
        return nothing("not calibrated: calibrate each eye to see a deviation; until then the traces show "
                       "movements and changes only")
    window = calibration.apply(traces.last(window_s))
    right, left = window.gaze("right"), window.gaze("left")
    both = np.isfinite(right).all(axis=1) & np.isfinite(left).all(axis=1)
    expected = window_s / window.frame_interval()
    if both.sum() < MIN_VALID * expected:
        return nothing("both eyes must be measurable", int(both.sum()))
    right, left = right[both], left[both]
    if max(np.std(right, axis=0).max(), np.std(left, axis=0).max()) > MAX_FIXATION_SD:
        return nothing("the eyes are moving: deviation is measured while they fixate", int(both.sum()))
    difference = np.median(right - left, axis=0)
    error = combined_error_pd(calibration) or 0.0
    h_pd, h_name = _named(float(difference[0]), error, horizontal_name)
    v_pd, v_name = _named(float(difference[1]), error, vertical_name)
    return DeviationResult(h_pd, h_name, v_pd, v_name, float(difference[0]), float(difference[1]), error,
                           int(both.sum()), True, None)


@dataclass(frozen=True)
class PositionResult(Result):
    MEASURE: ClassVar[str] = "gaze_position"
    UNITS: ClassVar[dict[str, str]] = {
        "target_yaw": "deg", "target_pitch": "deg", "right_yaw": "deg", "right_pitch": "deg", "left_yaw": "deg",
        "left_pitch": "deg", "change_horizontal_deg": "deg, R - L relative to the centre position",
        "change_vertical_deg": "deg, R - L relative to the centre position", "horizontal_pd": "prism dioptres",
        "vertical_pd": "prism dioptres", "error_pd": "prism dioptres"}
    CAVEAT: ClassVar[str] = (
        "Eye positions are medians over the second part of each hold. Uncalibrated, only the change of the "
        "difference between the eyes from the centre position is shown (incomitance), in tracker degrees; with "
        "both eyes calibrated the deviation is in prism dioptres. The tracker's accuracy falls in extreme gaze, "
        "where the lids cover the iris.")

    position: str
    target_yaw: float
    target_pitch: float
    right_yaw: float | None
    right_pitch: float | None
    left_yaw: float | None
    left_pitch: float | None
    change_horizontal_deg: float | None
    change_vertical_deg: float | None
    horizontal_pd: float | None
    horizontal: str | None
    vertical_pd: float | None
    vertical: str | None
    error_pd: float | None
    calibrated: bool


def nine_position_deviations(traces: Traces, schedule: TargetSchedule, origin: float = 0.0,
                             calibration: Calibration | None = None) -> list[PositionResult]:
    """Per held position: each eye's gaze and the deviation between the eyes."""
    if calibration is not None:
        traces = calibration.apply(traces)
    calibrated = all(eye in traces.calibrated for eye in EYES)
    error = combined_error_pd(calibration) if calibration is not None and calibrated else None
    medians: list[tuple[Any, np.ndarray | None, np.ndarray | None]] = []
    for segment in schedule.segments:
        hold = segment.end_s - segment.start_s
        window = traces.between(origin + segment.start_s + min(1.0, 0.4 * hold), origin + segment.end_s)
        per_eye = []
        for eye in EYES:
            gaze = window.gaze(eye)
            gaze = gaze[np.isfinite(gaze).all(axis=1)]
            per_eye.append(np.median(gaze, axis=0) if len(gaze) >= 5 else None)
        medians.append((segment, *per_eye))
    centre = next(((right, left) for segment, right, left in medians
                   if segment.label == "centre" and right is not None and left is not None), None)
    out = []
    for segment, right, left in medians:
        both = right is not None and left is not None
        difference = right - left if both else None
        change = difference - (centre[0] - centre[1]) if both and centre is not None else None
        h_pd = h_name = v_pd = v_name = None
        if both and calibrated:
            h_pd, h_name = _named(float(difference[0]), error or 0.0, horizontal_name)
            v_pd, v_name = _named(float(difference[1]), error or 0.0, vertical_name)
        out.append(PositionResult(
            segment.label, segment.yaw, segment.pitch,
            None if right is None else float(right[0]), None if right is None else float(right[1]),
            None if left is None else float(left[0]), None if left is None else float(left[1]),
            None if change is None else float(change[0]), None if change is None else float(change[1]),
            h_pd, h_name, v_pd, v_name, error, calibrated))
    return out


# ---- nystagmus -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Oscillation:
    """The periodic part fitted to one eye's gaze at one frequency."""

    frequency_hz: float
    confidence: float
    #: Fitted periodic waveform over one period, (200, 2) yaw and pitch, deg.
    waveform: np.ndarray
    #: Sine and cosine coefficients of each harmonic, (2 x harmonics, 2).
    coefficients: np.ndarray

    def at(self, t: np.ndarray) -> np.ndarray:
        """The periodic part at times ``t`` (s), (n, 2) deg."""
        return _harmonic_columns(t, self.frequency_hz) @ self.coefficients

    @property
    def peak_to_peak(self) -> tuple[float, float]:
        return tuple(float(v) for v in np.ptp(self.waveform, axis=0))  # type: ignore[return-value]

    @cached_property
    def principal(self) -> np.ndarray:
        """The waveform along its main direction (deg), that direction pointing + yaw or + pitch."""
        centred = self.waveform - self.waveform.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        direction = vt[0] if vt[0][np.argmax(np.abs(vt[0]))] > 0 else -vt[0]
        return centred @ direction

    @property
    def amplitude(self) -> float:
        return float(np.ptp(self.principal))


def _design(t: np.ndarray, frequency: float, harmonics: int) -> np.ndarray:
    tau = (t - t.mean()) / max(float(np.ptp(t)), 1e-6)
    columns = [np.ones_like(t), tau, tau ** 2]
    for n in range(1, harmonics + 1):
        columns += [np.sin(2 * np.pi * n * frequency * t), np.cos(2 * np.pi * n * frequency * t)]
    return np.column_stack(columns)


def _harmonics(frequency: float) -> int:
    return max(1, min(MAX_HARMONICS, int(MAX_HARMONIC_HZ / frequency + 1e-9)))


def _periodic_fit(t: np.ndarray, gaze: np.ndarray, frequency: float) -> tuple[float, np.ndarray]:
    """Residual sum of squares and coefficients of the waveform at ``frequency`` over a quadratic trend."""
    design = _design(t, frequency, _harmonics(frequency))
    try:
        solution = np.linalg.solve(design.T @ design, design.T @ gaze)
    except np.linalg.LinAlgError:
        solution, *_ = np.linalg.lstsq(design, gaze, rcond=None)
    return float(np.sum((gaze - design @ solution) ** 2)), solution


def _trend_ss(t: np.ndarray, gaze: np.ndarray) -> float:
    design = _design(t, 1.0, 0)
    trend, *_ = np.linalg.lstsq(design, gaze, rcond=None)
    return float(np.sum((gaze - design @ trend) ** 2))


def _harmonic_columns(t: np.ndarray, frequency: float) -> np.ndarray:
    return np.column_stack([f(2 * np.pi * n * frequency * t) for n in range(1, _harmonics(frequency) + 1)
                            for f in (np.sin, np.cos)])


def _oscillation(frequency: float, ss_full: float, ss_trend: float, solution: np.ndarray) -> Oscillation:
    confidence = 1 - ss_full / ss_trend if ss_trend > 0 else 0.0
    phase = np.linspace(0, 1 / frequency, 200, endpoint=False)
    return Oscillation(frequency, max(0.0, confidence), _harmonic_columns(phase, frequency) @ solution[3:],
                       solution[3:])


def fit_oscillation(t: np.ndarray, gaze: np.ndarray, frequency: float) -> Oscillation:
    """Least-squares periodic waveform at ``frequency`` (with harmonics) over a quadratic trend."""
    ss_full, solution = _periodic_fit(t, gaze, frequency)
    return _oscillation(frequency, ss_full, _trend_ss(t, gaze), solution)


def dominant_oscillation(t: np.ndarray, gaze: np.ndarray) -> Oscillation | None:
    """The strongest oscillation of (n, 2) gaze between 1 and 8 Hz, refined; None without a clear peak.

    The spectrum is that of the samples put on an even grid at the median frame interval (short gaps joined
    by straight lines), Hann-weighted and zero-padded; the peak is refined by a parabola through the
    neighbouring bins and by the best of a few waveform fits around it, on the samples themselves.
    """
    if len(t) < 20 or np.any(np.diff(t) <= 0):
        return None
    frame = float(np.median(np.diff(t)))
    grid = np.arange(t[0], t[-1] + frame / 2, frame)
    even = np.column_stack([np.interp(grid, t, gaze[:, axis]) for axis in (0, 1)])
    trend_design = _design(grid, 1.0, 0)
    trend, *_ = np.linalg.lstsq(trend_design, even, rcond=None)
    detrended = (even - trend_design @ trend) * np.hanning(len(grid))[:, None]
    size = max(SPECTRUM_SIZE, 1 << int(np.ceil(np.log2(len(grid)))))
    power = np.sum(np.abs(np.fft.rfft(detrended, n=size, axis=0)) ** 2, axis=1)
    frequencies = np.fft.rfftfreq(size, frame)
    band = np.nonzero((frequencies >= NYSTAGMUS_BAND[0]) & (frequencies <= NYSTAGMUS_BAND[1]))[0]
    if band.size == 0 or band[0] == 0 or band[-1] + 1 >= len(power):
        return None
    peak = int(band[np.argmax(power[band])])
    if power[peak] < power[peak - 1] or power[peak] < power[peak + 1]:
        return None  # the band's edge on the slope of a stronger peak outside it
    a, b, c = np.log(power[peak - 1: peak + 2] + 1e-30)
    shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    frequency = float(frequencies[peak] + shift * (frequencies[1] - frequencies[0]))
    candidates = [(frequency + step, *_periodic_fit(t, gaze, frequency + step)) for step in REFINE_HZ]
    best, ss_full, solution = min(candidates, key=lambda candidate: candidate[1])
    return _oscillation(best, ss_full, _trend_ss(t, gaze), solution)


@dataclass(frozen=True)
class NystagmusResult(Result):
    MEASURE: ClassVar[str] = "nystagmus"
    UNITS: ClassVar[dict[str, str]] = {"frequency_hz": "Hz", "amplitude_deg": "deg peak to peak",
                                       "horizontal_deg": "deg peak to peak", "vertical_deg": "deg peak to peak",
                                       "confidence": "share of movement explained, 0-1"}
    CAVEAT: ClassVar[str] = (
        "From the last 4 s of gaze: the strongest oscillation between 1 and 8 Hz, claimed only when a periodic "
        "waveform explains at least half of the movement and is at least 0.5 deg peak to peak. Finer nystagmus "
        "is below the tracker's resolution, above about 10 Hz a 30 fps camera cannot follow, and torsional "
        "nystagmus is not measured. Beat direction names the fast phase from the patient's side.")

    eye: str
    detected: bool
    frequency_hz: float | None
    amplitude_deg: float | None
    horizontal_deg: float | None
    vertical_deg: float | None
    direction: str | None
    beating: str | None
    conjugate: bool | None
    confidence: float | None
    reason: str | None


def _beating(oscillation: Oscillation, direction: str) -> str:
    """"pendular", or which way the fast phase goes, from the patient's side."""
    waveform = oscillation.principal
    velocity = np.gradient(np.concatenate([waveform, waveform[:1]]))[:-1]
    fast_positive = velocity.max() / max(-velocity.min(), 1e-9)
    if max(fast_positive, 1 / max(fast_positive, 1e-9)) < JERK_RATIO:
        return "pendular"
    positive = fast_positive > 1
    if direction == "vertical":
        return "up-beating" if positive else "down-beating"
    # + yaw is towards the camera picture's right, which is the patient's left
    return "left-beating" if positive else "right-beating"


def nystagmus(traces: Traces, window_s: float = NYSTAGMUS_WINDOW_S) -> list[NystagmusResult]:
    """Per eye, over the last ``window_s``: nystagmus frequency, amplitude, direction, conjugacy; or nothing."""
    window = traces.last(window_s)
    expected = window_s / window.frame_interval()
    found: dict[str, tuple[Oscillation | None, str | None]] = {}
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for eye in EYES:
        gaze = window.gaze(eye)
        ok = np.isfinite(gaze).all(axis=1)
        if ok.sum() < max(20, 0.7 * expected) or (ok.any() and np.ptp(window.t[ok]) < 0.8 * window_s):
            found[eye] = (None, "not enough measured frames")
            continue
        t, samples = window.t[ok], gaze[ok]
        series[eye] = (t, samples)
        oscillation = dominant_oscillation(t, samples)
        if oscillation is None:
            found[eye] = (None, "no oscillation between 1 and 8 Hz")
        elif oscillation.confidence < MIN_CONFIDENCE:
            found[eye] = (None, f"below confidence ({oscillation.confidence:.2f})")
        elif oscillation.amplitude < MIN_NYSTAGMUS_DEG:
            found[eye] = (None, f"below {MIN_NYSTAGMUS_DEG} deg")
        else:
            found[eye] = (oscillation, None)
    conjugate = _conjugate(found, series)
    out = []
    for eye in EYES:
        oscillation, reason = found[eye]
        if oscillation is None:
            out.append(NystagmusResult(eye, False, None, None, None, None, None, None, None, None, reason))
            continue
        horizontal, vertical = oscillation.peak_to_peak
        if min(horizontal, vertical) < 0.4 * max(horizontal, vertical):
            direction = "horizontal" if horizontal >= vertical else "vertical"
        else:
            direction = "both"
        out.append(NystagmusResult(eye, True, oscillation.frequency_hz, oscillation.amplitude, horizontal, vertical,
                                   direction, _beating(oscillation, direction), conjugate,
                                   oscillation.confidence, None))
    return out


def _conjugate(found: dict[str, tuple[Oscillation | None, str | None]],
               series: dict[str, tuple[np.ndarray, np.ndarray]]) -> bool | None:
    """Whether the eyes beat together: same frequency, in phase, similar size. None if an eye is unmeasured."""
    if set(series) != set(EYES):
        return None
    right, left = found["right"][0], found["left"][0]
    if right is None or left is None or abs(right.frequency_hz - left.frequency_hz) > 0.3:
        return False
    t = np.union1d(series["right"][0], series["left"][0])
    a, b = right.at(t), left.at(t)
    correlation = float(np.sum(a * b) / math.sqrt(float(np.sum(a * a) * np.sum(b * b)) or 1.0))
    ratio = right.amplitude / max(left.amplitude, 1e-9)
    return correlation >= 0.5 and 0.5 <= ratio <= 2.0


# ---- lids ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LidResult(Result):
    MEASURE: ClassVar[str] = "lids"
    UNITS: ClassVar[dict[str, str]] = {"mrd1_mm": "mm", "mrd2_mm": "mm", "fissure_mm": "mm",
                                       "ptosis": "MRD1 < 2 mm or > 1 mm below the other eye, for 2 s"}
    CAVEAT: ClassVar[str] = (
        "Millimetres are scaled by a population-mean iris of 11.7 mm, so a larger or smaller iris scales them "
        "(by about 8%). Read them with the patient looking straight ahead: the upper lid follows the eye "
        "down. Fissure height is MRD1 + MRD2.")

    eye: str
    mrd1_mm: float | None
    mrd2_mm: float | None
    fissure_mm: float | None
    ptosis: bool | None
    reason: str | None


def lids(traces: Traces, window_s: float = LID_WINDOW_S) -> list[LidResult]:
    """Per eye over the last ``window_s``: MRD1, MRD2, fissure height, and the ptosis flag held over the window."""
    window = traces.last(window_s)
    expected = window_s / window.frame_interval()
    mrd1 = {eye: window.eye(eye, "mrd1") for eye in EYES}
    usable = {}
    for eye in EYES:
        aperture = window.eye(eye, "aperture")
        level = np.nanpercentile(aperture, 90) if np.isfinite(aperture).any() else np.nan
        with np.errstate(invalid="ignore"):
            usable[eye] = np.isfinite(mrd1[eye]) & np.isfinite(window.eye(eye, "mrd2")) & (aperture >= OPEN_SHARE
                                                                                            * level)
    out = []
    for eye in EYES:
        use = usable[eye]
        if use.sum() < MIN_VALID * expected:
            out.append(LidResult(eye, None, None, None, None, "not enough open-eye frames"))
            continue
        one, two = mrd1[eye][use], window.eye(eye, "mrd2")[use]
        low = one < PTOSIS_MRD1_MM
        theirs = mrd1[other(eye)][use]
        with np.errstate(invalid="ignore"):
            asymmetric = np.isfinite(theirs) & (theirs - one > PTOSIS_ASYMMETRY_MM)
        held = np.ptp(window.t[use]) >= 0.9 * window_s
        flagged = bool(held and np.mean(low | asymmetric) >= PTOSIS_SHARE)
        out.append(LidResult(eye, float(np.median(one)), float(np.median(two)), float(np.median(one + two)),
                             flagged, None if held else "shorter than the hold time"))
    return out


# ---- blinks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlinkEvent:
    """One blink: when it ended, how far the lid fell (share of the open level) and how it is classed."""

    t: float
    fall: float | None
    closed_samples: int

    @property
    def complete(self) -> bool | None:
        if self.fall is None or self.closed_samples < MIN_CLOSED_SAMPLES:
            return None
        return self.fall >= COMPLETE_FALL


class BlinkTracker:
    """One eye's blinks by :class:`~proxy.tracking.blinks.BlinkCounter`'s rule, with each blink's depth."""

    def __init__(self) -> None:
        self.counter = BlinkCounter()
        self.events: list[BlinkEvent] = []
        self._level: float | None = None
        self._lowest = math.inf
        self._closed = 0

    def update(self, aperture: float | None, t: float) -> BlinkEvent | None:
        """Feed one sample (None or NaN: not measured); the blink that ended here, if one did."""
        if aperture is not None and not math.isfinite(aperture):
            aperture = None
        was_closed = self.counter.is_closed
        ended = self.counter.update(aperture, t)
        if aperture is not None and self.counter.is_closed:
            if not was_closed:  # the open level the rule just used, give or take this one sample
                self._level, self._lowest, self._closed = self.counter.level(), aperture, 0
            self._lowest = min(self._lowest, aperture)
            self._closed += 1
        if not ended:
            return None
        fall = None
        if self._level is not None and self._level > 0:
            fall = min(1.0, max(0.0, (self._level - self._lowest) / self._level))
        event = BlinkEvent(t, fall, self._closed)
        self.events.append(event)
        return event

    def since(self, start: float) -> list[BlinkEvent]:
        return [e for e in self.events if e.t >= start]

    def forget_before(self, start: float) -> None:
        self.events = self.since(start)


@dataclass(frozen=True)
class BlinkResult(Result):
    MEASURE: ClassVar[str] = "blinks"
    UNITS: ClassVar[dict[str, str]] = {"count": "blinks", "rate_per_min": "blinks per minute",
                                       "complete": "count", "incomplete": "count", "unclassified": "count",
                                       "duration_s": "s"}
    CAVEAT: ClassVar[str] = (
        "Counted with the doctor page's rule (the aperture below 0.55 of the eye's recent open level, then open "
        "again). At 30 fps a fast blink is often caught half shut, so only blinks seen closed in at least 3 "
        "frames are classed as complete or incomplete (the lid falling less than 80% of the way); the rest are "
        "unclassified.")

    eye: str
    count: int
    rate_per_min: float | None
    complete: int
    incomplete: int
    unclassified: int
    duration_s: float


def summarize_blinks(eye: str, events: list[BlinkEvent], duration_s: float) -> BlinkResult:
    complete = sum(1 for e in events if e.complete is True)
    incomplete = sum(1 for e in events if e.complete is False)
    rate = 60 * len(events) / duration_s if duration_s >= 10 else None
    return BlinkResult(eye, len(events), rate, complete, incomplete, len(events) - complete - incomplete,
                       duration_s)


def blinks(traces: Traces) -> list[BlinkResult]:
    """Per eye over the whole traces: blink count and rate, complete and incomplete blinks."""
    out = []
    for eye in EYES:
        tracker = BlinkTracker()
        for t, aperture in zip(traces.t, traces.eye(eye, "aperture"), strict=True):
            tracker.update(float(aperture), float(t))
        out.append(summarize_blinks(eye, tracker.events, traces.span()))
    return out

"""Target schedules of the guided tests: where the dot is at each moment, in degrees of visual angle.

Every test is a list of :class:`Segment` s, each a point held still or a
sinusoid about it, so one deterministic function of time describes them all and
the patient's page needs only one way to draw them. Times are seconds from the
moment the dot starts (after the page has shown the instruction for
:data:`LEAD_S`); angles follow MaskParams' gaze convention (yaw + towards the
camera picture's right = the patient's left, pitch + up), and
:class:`~proxy.exam.screen.Screen` turns them into places on the screen.

* smooth pursuit: a hold at the centre, then ``cycles`` of a sinusoid
  horizontally, then the same vertically;
* saccades: the dot jumps from the centre to a point ``amplitude`` away and
  back, at pseudo-random (seeded, so reproducible) intervals and sides, so the
  patient cannot anticipate the jumps;
* fixation: the centre, held;
* the nine cardinal gaze positions, named from the patient's side (``right``
  is the patient's right, where the picture shows the eyes turning left);
* calibration: five points (centre, then right, left, up, down), held.

A schedule that would leave the screen is shrunk to fit it (the command and the
results say what was actually shown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from proxy.exam.screen import Screen

#: Seconds the patient's page shows the instruction before the dot starts.
LEAD_S = 2.0
#: Seconds at the centre before each pursuit sweep, so that pursuit starts from fixation.
PURSUIT_HOLD_S = 1.0

#: What the patient's page says during each test.
INSTRUCTIONS = {
    "pursuit": "Follow the moving dot with your eyes. Keep your head still.",
    "saccades": "Look at the dot. When it jumps, look at it again as quickly as you can. Keep your head still.",
    "fixation": "Look steadily at the dot. Keep your head still.",
    "nine_positions": "Look at the dot wherever it goes. Keep your head still.",
    "calibration_right": "Cover your LEFT eye with your hand. With your right eye, look at each dot until it moves.",
    "calibration_left": "Cover your RIGHT eye with your hand. With your left eye, look at each dot until it moves.",
}

#: The nine cardinal positions as (name, yaw sign, pitch sign), named from the patient's side: the patient's
#: right is negative yaw in MaskParams' convention.
NINE_POSITIONS = (("centre", 0, 0), ("up", 0, 1), ("up right", -1, 1), ("right", -1, 0), ("down right", -1, -1),
                  ("down", 0, -1), ("down left", 1, -1), ("left", 1, 0), ("up left", 1, 1))
#: Calibration points, in the order shown.
CALIBRATION_POSITIONS = (("centre", 0, 0), ("right", -1, 0), ("left", 1, 0), ("up", 0, 1), ("down", 0, -1))


@dataclass(frozen=True)
class Segment:
    """The dot over [start_s, end_s): at (yaw, pitch) plus amp x sin(2 pi f (t - start_s)) on each axis."""

    start_s: float
    end_s: float
    yaw: float = 0.0
    pitch: float = 0.0
    amp_yaw: float = 0.0
    amp_pitch: float = 0.0
    frequency_hz: float = 0.0
    label: str = ""

    @property
    def moving(self) -> bool:
        return self.frequency_hz > 0 and (self.amp_yaw != 0 or self.amp_pitch != 0)

    def to_json(self) -> dict[str, Any]:
        return {"t0": round(self.start_s, 4), "t1": round(self.end_s, 4), "yaw": round(self.yaw, 3),
                "pitch": round(self.pitch, 3), "amp_yaw": round(self.amp_yaw, 3),
                "amp_pitch": round(self.amp_pitch, 3), "hz": round(self.frequency_hz, 4), "label": self.label}


@dataclass(frozen=True)
class Step:
    """A jump of the dot at time ``t`` (s) from one held point to the next (deg)."""

    t: float
    start: tuple[float, float]
    end: tuple[float, float]

    @property
    def axis(self) -> int:
        """0 when the jump is mostly horizontal (yaw), 1 when vertical (pitch)."""
        return 0 if abs(self.end[0] - self.start[0]) >= abs(self.end[1] - self.start[1]) else 1

    @property
    def size(self) -> float:
        """Signed size of the jump along its axis (deg)."""
        return self.end[self.axis] - self.start[self.axis]


@dataclass(frozen=True)
class TargetSchedule:
    """One test's dot as a deterministic function of time (seconds from the dot's start)."""

    test: str
    segments: tuple[Segment, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0

    def segment_index(self, t: np.ndarray | float) -> np.ndarray:
        """Index of the segment each time falls in; -1 before the start and after the end."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        index = np.searchsorted(self._columns[:, 0], t, side="right") - 1
        inside = (index >= 0) & (t < self._columns[np.clip(index, 0, None), 1])
        return np.where(inside, index, -1)

    @cached_property
    def _columns(self) -> np.ndarray:
        return np.array([[s.start_s, s.end_s, s.yaw, s.pitch, s.amp_yaw, s.amp_pitch, s.frequency_hz]
                         for s in self.segments])

    def position(self, t: np.ndarray | float) -> np.ndarray:
        """Target (yaw, pitch) in degrees at each time, shape (n, 2); NaN outside the schedule."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        index = self.segment_index(t)
        c = self._columns[np.clip(index, 0, None)]
        phase = np.sin(2 * np.pi * c[:, 6] * (t - c[:, 0]))
        out = np.stack([c[:, 2] + c[:, 4] * phase, c[:, 3] + c[:, 5] * phase], axis=1)
        out[index < 0] = np.nan
        return out

    def velocity(self, t: np.ndarray | float) -> np.ndarray:
        """Target velocity (deg/s) at each time, shape (n, 2); zero during holds, NaN outside."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        index = self.segment_index(t)
        c = self._columns[np.clip(index, 0, None)]
        rate = 2 * np.pi * c[:, 6] * np.cos(2 * np.pi * c[:, 6] * (t - c[:, 0]))
        out = np.stack([c[:, 4] * rate, c[:, 5] * rate], axis=1)
        out[index < 0] = np.nan
        return out

    def steps(self) -> list[Step]:
        """The jumps between consecutive held points (saccade targets)."""
        out = []
        for before, after in zip(self.segments, self.segments[1:], strict=False):
            if before.moving or after.moving:
                continue
            if (before.yaw, before.pitch) != (after.yaw, after.pitch):
                out.append(Step(after.start_s, (before.yaw, before.pitch), (after.yaw, after.pitch)))
        return out

    def to_command(self, screen: Screen, test_id: int, instruction: str | None = None) -> dict[str, Any]:
        """The message for the patient's page (see the module docstring for how to draw it)."""
        return {"exam": {"test": self.test, "id": test_id, "lead_s": LEAD_S,
                         "duration_s": round(self.duration_s, 3),
                         "instruction": instruction or instruction_for(self),
                         "screen": {"width_css_px": round(screen.width_px, 1),
                                    "height_css_px": round(screen.height_px, 1),
                                    "distance_css_px": round(screen.distance_px, 1)},
                         "segments": [s.to_json() for s in self.segments]}}


def _axes(axes: str) -> list[int]:
    if axes not in ("horizontal", "vertical", "both"):
        raise ValueError(f"axes must be horizontal, vertical or both, not {axes!r}")
    return {"horizontal": [0], "vertical": [1], "both": [0, 1]}[axes]


def _fit(amplitude: float, axis: int, screen: Screen | None) -> float:
    """The amplitude, shrunk if needed so the dot stays on the screen along ``axis``."""
    if screen is None:
        return amplitude
    return min(amplitude, screen.max_angles()[axis])


def pursuit(frequency_hz: float = 0.2, amplitude_deg: float = 10.0, cycles: int = 3, axes: str = "both",
            screen: Screen | None = None) -> TargetSchedule:
    """Smooth pursuit: for each axis, a hold at the centre, then ``cycles`` of a sinusoid."""
    if not (frequency_hz > 0 and amplitude_deg > 0 and cycles >= 1):
        raise ValueError("frequency, amplitude and cycles must be positive")
    segments, t = [], 0.0
    amplitudes = []
    for axis in _axes(axes):
        amplitude = _fit(amplitude_deg, axis, screen)
        amplitudes.append(amplitude)
        segments.append(Segment(t, t + PURSUIT_HOLD_S, label="centre"))
        t += PURSUIT_HOLD_S
        sweep = cycles / frequency_hz
        name = "horizontal" if axis == 0 else "vertical"
        segments.append(Segment(t, t + sweep, amp_yaw=amplitude if axis == 0 else 0.0,
                                amp_pitch=amplitude if axis == 1 else 0.0, frequency_hz=frequency_hz, label=name))
        t += sweep
    return TargetSchedule("pursuit", tuple(segments), {"frequency_hz": frequency_hz, "amplitude_deg": min(amplitudes),
                                                       "cycles": cycles, "axes": axes})


def saccades(amplitude_deg: float = 10.0, count: int = 12, interval_s: float = 1.5, axes: str = "both",
             seed: int = 0, screen: Screen | None = None) -> TargetSchedule:
    """Centre-out-and-back jumps of ``amplitude_deg``, ``count`` in all, split over the axes.

    Each point is held for ``interval_s`` +-25% and each outward jump goes to either side, both drawn from a
    generator seeded with ``seed``, so the same options always give the same schedule.
    """
    if not (amplitude_deg > 0 and count >= 2 and interval_s > 0):
        raise ValueError("amplitude, count and interval must be positive")
    rng = np.random.default_rng(seed)
    axis_list = _axes(axes)
    segments: list[Segment] = []
    t, amplitudes = 0.0, []
    per_axis = [count // len(axis_list) + (1 if i < count % len(axis_list) else 0) for i in range(len(axis_list))]
    for axis, jumps in zip(axis_list, per_axis, strict=True):
        amplitude = _fit(amplitude_deg, axis, screen)
        amplitudes.append(amplitude)
        hold = interval_s * (1 + rng.uniform(-0.25, 0.25))
        segments.append(Segment(t, t + hold, label="centre"))
        t += hold
        for jump in range(jumps):
            hold = interval_s * (1 + rng.uniform(-0.25, 0.25))
            if jump % 2 == 0:
                side = 1.0 if rng.random() < 0.5 else -1.0
                yaw, pitch = (side * amplitude, 0.0) if axis == 0 else (0.0, side * amplitude)
                label = "out"
            else:
                yaw, pitch, label = 0.0, 0.0, "centre"
            segments.append(Segment(t, t + hold, yaw=yaw, pitch=pitch, label=label))
            t += hold
    return TargetSchedule("saccades", tuple(segments), {"amplitude_deg": min(amplitudes), "count": count,
                                                        "interval_s": interval_s, "axes": axes, "seed": seed})


def fixation(duration_s: float = 10.0) -> TargetSchedule:
    """A central dot held for ``duration_s``."""
    if not duration_s > 0:
        raise ValueError("duration must be positive")
    return TargetSchedule("fixation", (Segment(0.0, duration_s, label="centre"),), {"duration_s": duration_s})


def _held_points(test: str, positions: tuple[tuple[str, int, int], ...], eccentricity_deg: float, hold_s: float,
                 screen: Screen | None, options: dict[str, Any]) -> TargetSchedule:
    if not (eccentricity_deg > 0 and hold_s > 0):
        raise ValueError("eccentricity and hold must be positive")
    yaw_max, pitch_max = _fit(eccentricity_deg, 0, screen), _fit(eccentricity_deg, 1, screen)
    segments = [Segment(i * hold_s, (i + 1) * hold_s, yaw=sx * yaw_max, pitch=sy * pitch_max, label=name)
                for i, (name, sx, sy) in enumerate(positions)]
    return TargetSchedule(test, tuple(segments), options | {"eccentricity_deg": min(yaw_max, pitch_max),
                                                            "eccentricity_yaw_deg": yaw_max,
                                                            "eccentricity_pitch_deg": pitch_max, "hold_s": hold_s})


def nine_positions(eccentricity_deg: float = 15.0, hold_s: float = 3.0, screen: Screen | None = None
                   ) -> TargetSchedule:
    """The nine cardinal gaze positions, each held for ``hold_s`` (eccentricity shrunk per axis to fit)."""
    return _held_points("nine_positions", NINE_POSITIONS, eccentricity_deg, hold_s, screen, {})


def calibration_targets(eye: str, eccentricity_deg: float = 10.0, hold_s: float = 2.0,
                        screen: Screen | None = None) -> TargetSchedule:
    """Five points for calibrating ``eye`` ("right" or "left") while the other is covered."""
    if eye not in ("right", "left"):
        raise ValueError(f"eye must be right or left, not {eye!r}")
    return _held_points("calibration", CALIBRATION_POSITIONS, eccentricity_deg, hold_s, screen, {"eye": eye})


def build(test: str, options: dict[str, Any], screen: Screen | None = None) -> TargetSchedule:
    """The schedule for a validated command's test and options (see :mod:`proxy.exam.commands`)."""
    if test == "pursuit":
        return pursuit(screen=screen, **options)
    if test == "saccades":
        return saccades(screen=screen, **options)
    if test == "fixation":
        return fixation(**options)
    if test == "nine_positions":
        return nine_positions(screen=screen, **options)
    if test == "calibration":
        return calibration_targets(screen=screen, **options)
    raise ValueError(f"no schedule for {test!r}")


def instruction_for(schedule: TargetSchedule) -> str:
    """What the patient's page says for this schedule."""
    if schedule.test == "calibration":
        return INSTRUCTIONS[f"calibration_{schedule.options['eye']}"]
    return INSTRUCTIONS[schedule.test]


def peak_velocity(schedule: TargetSchedule) -> float:
    """The largest target speed of the schedule (deg/s), 0 for held points."""
    speeds = [2 * math.pi * s.frequency_hz * math.hypot(s.amp_yaw, s.amp_pitch) for s in schedule.segments]
    return max(speeds, default=0.0)

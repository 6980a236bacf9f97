"""Fidelity part of ``maskproxy audit``: does the avatar carry the eye, lid and head movements?

Each clip is tracked as ``maskproxy track`` tracks it (tracker + retargeter,
smoothing on frame times, the files' eye samples), masked with :class:`~proxy.pipeline.MaskPipeline`,
and the masked frames are tracked again by a separate tracker and retargeter
that know nothing of the original. A signal survives masking when the two
traces agree: Pearson r and mean absolute error over frames where both found
a face, face-found rates, and blink counts per eye. Everything stays in
memory; no video file is written. Blinks are counted by :mod:`proxy.tracking.blinks`
(the rule the doctor's page uses).

The pipeline's own measurement of the original *is* the ``track`` measurement
(same tracker, retargeter and smoothing), so the original is tracked once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from proxy.avatar.retarget import Retargeter
from proxy.files.media import VideoReader
from proxy.params import MaskParams
from proxy.pipeline import MaskPipeline
from proxy.tracking.blinks import BlinkCounter
from proxy.tracking.tracker import FaceTracker

#: The compared signals, with their units.
SIGNALS: dict[str, str] = {
    "right_gaze_yaw": "deg", "right_gaze_pitch": "deg", "left_gaze_yaw": "deg", "left_gaze_pitch": "deg",
    "right_aperture": "eye widths", "left_aperture": "eye widths",
    "head_yaw": "deg", "head_pitch": "deg", "head_roll": "deg",
}
#: Project targets for Pearson r per signal.
R_TARGETS: dict[str, float] = {
    "right_gaze_yaw": 0.9, "left_gaze_yaw": 0.9, "right_gaze_pitch": 0.8, "left_gaze_pitch": 0.8,
    "right_aperture": 0.9, "left_aperture": 0.9, "head_yaw": 0.9, "head_pitch": 0.9, "head_roll": 0.9,
}
#: The masked face must be found on at least this fraction of frames where the original's was.
FOUND_TARGET = 0.95
#: Blink counts per eye may differ by at most this much.
BLINK_TOLERANCE = 1
#: Masked frames kept per clip for the report (avatar only).
SAMPLE_FRAMES = 4
#: Height of the kept masked frames (pixels).
SAMPLE_HEIGHT = 180


@dataclass
class ClipTrace:
    """Per-frame signals of one clip, original and masked (NaN where no face)."""

    name: str
    fps: float
    size: tuple[int, int]
    t: np.ndarray
    original: np.ndarray  #: (frames, len(SIGNALS))
    masked: np.ndarray
    samples: list[tuple[float, np.ndarray]] = field(default_factory=list)  #: (t, masked frame) pairs

    @property
    def frames(self) -> int:
        return len(self.t)

    def signal(self, name: str, masked: bool = False) -> np.ndarray:
        return (self.masked if masked else self.original)[:, list(SIGNALS).index(name)]


def _row(params: MaskParams) -> list[float]:
    return [getattr(params, name) if params.face else math.nan for name in SIGNALS]


def trace_clip(path: Path, pipeline: MaskPipeline, tracker: FaceTracker, retarget: Retargeter,
               max_seconds: float | None = None, tick: Callable[[], None] | None = None) -> ClipTrace:
    """Track, mask and re-track every frame of ``path`` (up to ``max_seconds``)."""
    for thing in (pipeline.tracker, pipeline.retarget, tracker, retarget):
        thing.reset()
    times: list[float] = []
    original: list[list[float]] = []
    masked: list[list[float]] = []
    samples: list[tuple[float, np.ndarray]] = []
    with VideoReader(path) as reader:
        fps = reader.fps
        total = reader.frame_count or int(fps * 10)
        if max_seconds is not None:
            total = min(total, int(max_seconds * fps))
        wanted = {int(total * (k + 0.5) / SAMPLE_FRAMES) for k in range(SAMPLE_FRAMES)}
        size = (0, 0)
        for frame in reader.frames():
            if max_seconds is not None and frame.t >= max_seconds:
                break
            height, width = frame.rgb.shape[:2]
            size = (width, height)
            params, avatar = pipeline.process(frame.rgb, frame.t, frame.index)
            again = retarget(tracker.process(avatar, frame.t), width, height, frame.index, frame.t)
            times.append(frame.t)
            original.append(_row(params))
            masked.append(_row(again))
            if frame.index in wanted:
                scale = SAMPLE_HEIGHT / height
                thumb = cv2.resize(avatar, (max(1, round(width * scale)), SAMPLE_HEIGHT), interpolation=cv2.INTER_AREA)
                samples.append((frame.t, thumb))
            if tick is not None:
                tick()
    columns = len(SIGNALS)
    return ClipTrace(path.name, fps, size, np.array(times), np.array(original, dtype=np.float64).reshape(-1, columns),
                     np.array(masked, dtype=np.float64).reshape(-1, columns), samples)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r, or None with fewer than 3 pairs or a constant trace."""
    if len(a) < 3 or float(np.std(a)) < 1e-12 or float(np.std(b)) < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def blink_times(trace: np.ndarray, times: np.ndarray) -> tuple[int, list[float]]:
    """Blinks in an aperture trace (NaN = no face) with :mod:`proxy.tracking.blinks`' rule, and when each closed."""
    counter = BlinkCounter()
    closed_at, found = 0.0, []
    for value, t in zip(trace, times, strict=True):
        was_closed = counter.is_closed
        if counter.update(None if math.isnan(value) else float(value), float(t)):
            found.append(round(closed_at, 3))
        elif counter.is_closed and not was_closed:
            closed_at = float(t)
    return counter.count, found


def clip_stats(clip: ClipTrace) -> dict[str, Any]:
    """Every fidelity number of one clip, with pass/fail against the project's targets."""
    found_o = ~np.isnan(clip.original[:, 0])
    found_m = ~np.isnan(clip.masked[:, 0])
    both = found_o & found_m
    n = clip.frames
    signals: dict[str, Any] = {}
    for name, unit in SIGNALS.items():
        a, b = clip.signal(name)[both], clip.signal(name, masked=True)[both]
        r = pearson(a, b)
        signals[name] = {
            "unit": unit,
            "pearson_r": r,
            "mae": float(np.mean(np.abs(a - b))) if len(a) else None,
            "original_sd": float(np.std(a)) if len(a) else None,
            "masked_sd": float(np.std(b)) if len(b) else None,
            "target_r": R_TARGETS[name],
            "pass": r is not None and r >= R_TARGETS[name],
        }
    found_given = float(both.sum() / found_o.sum()) if found_o.any() else None
    blinks: dict[str, Any] = {}
    for eye in ("right", "left"):
        count_o, times_o = blink_times(clip.signal(f"{eye}_aperture"), clip.t)
        count_m, times_m = blink_times(clip.signal(f"{eye}_aperture", masked=True), clip.t)
        blinks[eye] = {"original": count_o, "masked": count_m, "original_times": times_o,
                       "masked_times": times_m, "pass": abs(count_o - count_m) <= BLINK_TOLERANCE}
    return {
        "clip": clip.name,
        "frames": n,
        "fps": round(clip.fps, 3),
        "duration_s": round(float(clip.t[-1]) + 1.0 / clip.fps, 3) if n else 0.0,
        "size": list(clip.size),
        "face_found": {
            "original": float(found_o.mean()) if n else None,
            "masked": float(found_m.mean()) if n else None,
            "masked_where_original": found_given,
            "both_frames": int(both.sum()),
            "target": FOUND_TARGET,
            "pass": found_given is not None and found_given >= FOUND_TARGET,
        },
        "signals": signals,
        "blinks": blinks,
        "trace": {
            "t": np.round(clip.t, 4).tolist(),
            "original": {name: np.round(clip.signal(name), 4).tolist() for name in SIGNALS},
            "masked": {name: np.round(clip.signal(name, masked=True), 4).tolist() for name in SIGNALS},
        },
    }

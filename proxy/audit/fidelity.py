"""Fidelity part of ``maskproxy audit``: does the avatar carry the eye, lid and head movements?

Each clip is tracked as ``maskproxy track`` tracks it (tracker + retargeter,
smoothing on frame times, the files' eye samples), masked with :class:`~proxy.pipeline.MaskPipeline`,
and the masked frames are tracked again by a separate tracker and retargeter
that know nothing of the original. The errors are in the signals' own units,
because that is what a doctor misreads: per signal and per eye, the mean
absolute error and the mean signed error (bias, masked minus original) in
degrees or eye widths, and the same for the vergence (right minus left gaze),
where a bias is a squint the mask made up. Pearson r is reported only where
the original's signal varies enough for r to mean something.

Errors count frames where the original has a face and the eye (or signal) is
measurable in both traces; a field that is None in :class:`~proxy.params.MaskParams`
is an eye that could not be measured. "Face present" and "eye measurable" are
compared separately. Where the original has no face the pipeline shows the
neutral avatar: the re-tracker finding that avatar is not a found face.
Blinks are counted by :mod:`proxy.tracking.blinks` (the rule the doctor's page
uses). Everything stays in memory; no video file is written.

The pipeline's own measurement of the original *is* the ``track`` measurement
(same tracker, retargeter and smoothing), so the original is tracked once.
"""

from __future__ import annotations

import math
import warnings
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
from proxy.tracking.confidence import GAZE_MIN_APERTURE
from proxy.tracking.tracker import FaceTracker

#: The measured signals (fields of MaskParams), with their units.
MEASURED: dict[str, str] = {
    "right_gaze_yaw": "deg", "right_gaze_pitch": "deg", "left_gaze_yaw": "deg", "left_gaze_pitch": "deg",
    "right_aperture": "eye widths", "left_aperture": "eye widths",
    "head_yaw": "deg", "head_pitch": "deg", "head_roll": "deg",
}
#: Derived signals: right minus left gaze (a squint is a vergence that should not be there).
VERGENCE: dict[str, tuple[str, str]] = {
    "vergence_yaw": ("right_gaze_yaw", "left_gaze_yaw"),
    "vergence_pitch": ("right_gaze_pitch", "left_gaze_pitch"),
}
#: Every compared signal, with its unit.
SIGNALS: dict[str, str] = {**MEASURED, **{name: "deg" for name in VERGENCE}}
#: Pearson r is reported only where the original's SD reaches this (degrees; eye widths for apertures):
#: below it the signal barely moves and r measures noise.
R_MIN_SD: dict[str, float] = {name: 0.03 if unit == "eye widths" else 2.0 for name, unit in SIGNALS.items()}
#: Targets for r where it applies (none for the vergence: its errors are judged in degrees).
R_TARGETS: dict[str, float] = {
    "right_gaze_yaw": 0.9, "left_gaze_yaw": 0.9, "right_gaze_pitch": 0.85, "left_gaze_pitch": 0.85,
    "right_aperture": 0.9, "left_aperture": 0.9, "head_yaw": 0.9, "head_pitch": 0.9, "head_roll": 0.9,
}
#: Targets for the mean absolute error, in the signal's unit.
MAE_TARGETS: dict[str, float] = {
    "right_gaze_yaw": 2.0, "left_gaze_yaw": 2.0, "right_gaze_pitch": 2.0, "left_gaze_pitch": 2.0,
    "right_aperture": 0.03, "left_aperture": 0.03, "head_yaw": 2.0, "head_pitch": 2.0, "head_roll": 2.0,
    "vergence_yaw": 1.5, "vergence_pitch": 2.0,
}
#: Targets for the absolute mean signed error (bias).
BIAS_TARGETS: dict[str, float] = {"vergence_yaw": 0.75}
#: The masked face must be found on at least this fraction of frames where the original's was.
FOUND_TARGET = 0.95
#: Each eye's gaze must be measured (in the original and back from the mask) on this fraction of face frames.
GAZE_MEASURED_TARGET = 0.9
#: Blink counts per eye may differ by at most this much.
BLINK_TOLERANCE = 1
#: Masked frames kept per clip for the report (avatar only).
SAMPLE_FRAMES = 4
#: Height of the kept masked frames (pixels).
SAMPLE_HEIGHT = 180
EYES = ("right", "left")


@dataclass
class ClipTrace:
    """Per-frame signals of one clip, original and masked (NaN where no face or the field is None)."""

    name: str
    fps: float
    size: tuple[int, int]
    t: np.ndarray
    original: np.ndarray  #: (frames, len(MEASURED))
    masked: np.ndarray
    face_original: np.ndarray  #: (frames,) bool: the original's tracker found a face
    face_masked: np.ndarray  #: (frames,) bool: the re-tracker found a face in the avatar frame
    samples: list[tuple[float, np.ndarray]] = field(default_factory=list)  #: (t, masked frame) pairs
    flipped: bool = False  #: the clip was mirrored left-right before tracking
    cropped: bool = False  #: the clip was cropped off-centre before tracking (:func:`crop_off_centre`)

    @property
    def frames(self) -> int:
        return len(self.t)

    @property
    def clip_set(self) -> str:
        """Its key in :data:`CLIP_SETS`."""
        return "flipped_clips" if self.flipped else "cropped_clips" if self.cropped else "clips"

    def signal(self, name: str, masked: bool = False) -> np.ndarray:
        """One signal over the frames (NaN where not measured); vergence signals are right minus left."""
        if name in VERGENCE:
            right, left = VERGENCE[name]
            return self.signal(right, masked) - self.signal(left, masked)
        return (self.masked if masked else self.original)[:, list(MEASURED).index(name)]


def measured_row(params: MaskParams) -> list[float]:
    """The measured signals of one frame; NaN without a face or where a field is None (not measurable)."""
    row = []
    for name in MEASURED:
        value = getattr(params, name, None) if params.face else None
        row.append(math.nan if value is None else float(value))
    return row


#: The sets of clips an audit reports, each once: (key under ``fidelity`` in report.json, target set, how its clips
#: were changed before tracking; None for the clips as they are).
CLIP_SETS: tuple[tuple[str, str, str | None], ...] = (
    ("clips", "clips", None),
    ("flipped_clips", "flipped", "mirrored left-right (--flip)"),
    ("cropped_clips", "cropped", "cropped off-centre (--crop)"),
)

#: ``--crop``: the share of each side kept, and where the kept part starts (shares of the width and height).
CROP_KEEP = 0.8
CROP_START = (0.15, 0.05)


def crop_off_centre(rgb: np.ndarray) -> np.ndarray:
    """The picture cropped to :data:`CROP_KEEP` of each side, more off the left and the bottom than the other sides
    (even sizes): a face near the middle lands off the picture's centre and 1.25 times larger. As a camera placed
    elsewhere and nearer sees a patient, it is an unseen case made from the same clip."""
    height, width = rgb.shape[:2]
    keep_w, keep_h = int(width * CROP_KEEP) // 2 * 2, int(height * CROP_KEEP) // 2 * 2
    x0, y0 = int(width * CROP_START[0]), int(height * CROP_START[1])
    return np.ascontiguousarray(rgb[y0:y0 + keep_h, x0:x0 + keep_w])


def trace_clip(path: Path, pipeline: MaskPipeline, tracker: FaceTracker, retarget: Retargeter,
               max_seconds: float | None = None, tick: Callable[[], None] | None = None,
               flip: bool = False, crop: bool = False) -> ClipTrace:
    """Track, mask and re-track every frame of ``path`` (up to ``max_seconds``; mirrored with ``flip``, cropped
    off-centre with ``crop``)."""
    pipeline.reset()
    for thing in (tracker, retarget):
        thing.reset()
    times: list[float] = []
    original: list[list[float]] = []
    masked: list[list[float]] = []
    faces: list[tuple[bool, bool]] = []
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
            rgb = np.ascontiguousarray(frame.rgb[:, ::-1]) if flip else frame.rgb
            if crop:
                rgb = crop_off_centre(rgb)
            height, width = rgb.shape[:2]
            size = (width, height)
            params, avatar = pipeline.process(rgb, frame.t, frame.index)
            again = retarget(tracker.process(avatar, frame.t), width, height, frame.index, frame.t)
            times.append(frame.t)
            original.append(measured_row(params))
            masked.append(measured_row(again))
            faces.append((bool(params.face), bool(again.face)))
            if frame.index in wanted:
                scale = SAMPLE_HEIGHT / height
                thumb = cv2.resize(avatar, (max(1, round(width * scale)), SAMPLE_HEIGHT), interpolation=cv2.INTER_AREA)
                samples.append((frame.t, thumb))
            if tick is not None:
                tick()
    columns = len(MEASURED)
    found = np.array(faces, dtype=bool).reshape(-1, 2)
    name = path.name + (" (flipped)" if flip else "") + (" (cropped)" if crop else "")
    return ClipTrace(name, fps, size, np.array(times),
                     np.array(original, dtype=np.float64).reshape(-1, columns),
                     np.array(masked, dtype=np.float64).reshape(-1, columns), found[:, 0], found[:, 1], samples, flip,
                     crop)


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


def _share(part: np.ndarray, whole: np.ndarray) -> float | None:
    """Fraction of the ``whole`` frames that are also ``part`` frames (None without any)."""
    total = int(whole.sum())
    return float((part & whole).sum() / total) if total else None


def signal_stats(original: np.ndarray, masked: np.ndarray, name: str) -> dict[str, Any]:
    """Errors of ``masked`` against ``original`` (both NaN where not compared) in the signal's unit.

    Frames where either is NaN are left out. r only where the original's SD reaches ``R_MIN_SD``.
    """
    valid = ~np.isnan(original) & ~np.isnan(masked)
    a, b = original[valid], masked[valid]
    error = b - a
    n = int(valid.sum())
    sd = float(np.std(a)) if n else None
    applies = sd is not None and n >= 3 and sd >= R_MIN_SD[name]
    return {
        "unit": SIGNALS[name],
        "frames": n,
        "mae": float(np.mean(np.abs(error))) if n else None,
        "bias": float(np.mean(error)) if n else None,
        "error_sd": float(np.std(error)) if n else None,
        "original_sd": sd,
        "masked_sd": float(np.std(b)) if n else None,
        "r_applies": applies,
        "r_min_sd": R_MIN_SD[name],
        "pearson_r": pearson(a, b) if applies else None,
        "target_mae": MAE_TARGETS.get(name),
        "target_bias": BIAS_TARGETS.get(name),
        "target_r": R_TARGETS.get(name),
    }


#: Bands of what the eyes were doing in the original, for :func:`vergence_by_movement`: the speed of the mean
#: horizontal gaze of the two eyes (deg/s, frame to frame) and how far to the side the further eye looked (deg).
#: A doctor judges a deviation while the eyes fixate; saccades and far gaze are where the picture is least exact.
MOVEMENT_BANDS: tuple[tuple[str, tuple[float, float], tuple[float, float]], ...] = (
    ("fixating, within 20 deg", (0.0, 20.0), (0.0, 20.0)),
    ("moving 20-100 deg/s, within 20 deg", (20.0, 100.0), (0.0, 20.0)),
    ("saccade, 100 deg/s or faster, within 20 deg", (100.0, math.inf), (0.0, 20.0)),
    ("20-30 deg to the side", (0.0, math.inf), (20.0, 30.0)),
    ("30 deg or more to the side", (0.0, math.inf), (30.0, math.inf)),
)


def vergence_by_movement(clips: list[ClipTrace]) -> list[dict[str, Any]]:
    """The vergence-yaw error (masked minus original, degrees) pooled over ``clips``, over all compared frames and
    in each of :data:`MOVEMENT_BANDS`: its MAE, bias and 95th percentile of the absolute error, and the frames."""
    errors: list[np.ndarray] = []
    speeds: list[np.ndarray] = []
    sides: list[np.ndarray] = []
    for clip in clips:
        error = clip.signal("vergence_yaw", masked=True) - clip.signal("vergence_yaw")
        gaze = np.stack([clip.signal(name) for name in VERGENCE["vergence_yaw"]], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # frames with neither eye measured: NaN, left out
            mean = np.nanmean(gaze, axis=1)
            side = np.nanmax(np.abs(gaze), axis=1)
        speed = np.abs(np.gradient(mean, clip.t)) if clip.frames >= 2 else np.full(clip.frames, np.nan)
        errors.append(error)
        speeds.append(speed)
        sides.append(side)
    error, speed, side = (np.concatenate(x) if x else np.zeros(0) for x in (errors, speeds, sides))
    compared = np.isfinite(error)
    rows = [_error_row("all compared frames", error[compared])]
    known = compared & np.isfinite(speed) & np.isfinite(side)
    for name, (slow, fast), (near, far) in MOVEMENT_BANDS:
        band = known & (speed >= slow) & (speed < fast) & (side >= near) & (side < far)
        rows.append(_error_row(name, error[band]))
    return rows


def _error_row(name: str, error: np.ndarray) -> dict[str, Any]:
    n = len(error)
    return {"band": name, "frames": n, "mae": float(np.mean(np.abs(error))) if n else None,
            "bias": float(np.mean(error)) if n else None,
            "p95": float(np.percentile(np.abs(error), 95)) if n else None}


def clip_stats(clip: ClipTrace) -> dict[str, Any]:
    """Every fidelity number of one clip, with its targets checked (``targets``)."""
    n = clip.frames
    found_o, found_m = clip.face_original, clip.face_masked
    both = found_o & found_m
    signals: dict[str, Any] = {}
    for name in SIGNALS:
        original = np.where(both, clip.signal(name), np.nan)
        signals[name] = signal_stats(original, clip.signal(name, masked=True), name)
        faces = int(found_o.sum())  # share of the original's face frames compared
        signals[name]["coverage"] = signals[name]["frames"] / faces if faces else None
    eyes: dict[str, Any] = {}
    for eye in EYES:
        eyes[eye] = {}
        # a closed eye has no gaze to measure (never guessed), so a clip with many blinks cannot reach the gaze
        # target however well the mask does: the share over the frames where the original's lids read open says
        # how much of the shortfall is blinks (not a target, reported beside it)
        open_o = found_o & ~(clip.signal(f"{eye}_aperture") < GAZE_MIN_APERTURE)
        for part, names in (("gaze", (f"{eye}_gaze_yaw", f"{eye}_gaze_pitch")),
                            ("aperture", (f"{eye}_aperture",))):
            ok_o = found_o & np.all([~np.isnan(clip.signal(s)) for s in names], axis=0)
            ok_m = found_m & np.all([~np.isnan(clip.signal(s, masked=True)) for s in names], axis=0)
            measured_both = _share(ok_o & ok_m, found_o)
            eyes[eye][part] = {
                "original": _share(ok_o, found_o),  # measurable in the original, of its face frames
                "masked_where_original": _share(ok_m, ok_o),
                "masked_only": int((both & ok_m & ~ok_o).sum()),  # the avatar eased over an unmeasured eye
                "agreement": _share(ok_o == ok_m, both),  # measurable in both or in neither, of shared face frames
                "measured_both": measured_both,
            }
            if part == "gaze":
                eyes[eye][part]["measured_both_eye_open"] = _share(ok_o & ok_m & open_o, open_o)
        gaze = eyes[eye]["gaze"]
        gaze["target"] = GAZE_MEASURED_TARGET
        gaze["pass"] = gaze["measured_both"] is not None and gaze["measured_both"] >= GAZE_MEASURED_TARGET
    found_given = _share(found_m, found_o)
    blinks: dict[str, Any] = {}
    for eye in EYES:
        count_o, times_o = blink_times(clip.signal(f"{eye}_aperture"), clip.t)
        count_m, times_m = blink_times(np.where(found_o, clip.signal(f"{eye}_aperture", masked=True), np.nan), clip.t)
        blinks[eye] = {"original": count_o, "masked": count_m, "original_times": times_o,
                       "masked_times": times_m, "pass": abs(count_o - count_m) <= BLINK_TOLERANCE}
    stats = {
        "clip": clip.name,
        "flipped": clip.flipped,
        "cropped": clip.cropped,
        "frames": n,
        "fps": round(clip.fps, 3),
        "duration_s": round(float(clip.t[-1]) + 1.0 / clip.fps, 3) if n else 0.0,
        "size": list(clip.size),
        "face_found": {
            "original": float(found_o.mean()) if n else None,
            # the neutral avatar shown where the original has no face is not a found face
            "masked": float(both.mean()) if n else None,
            "masked_where_original": found_given,
            "agreement": float((found_o == both).mean()) if n else None,
            "both_frames": int(both.sum()),
            "neutral_avatar_frames": int((found_m & ~found_o).sum()),
            "target": FOUND_TARGET,
            "pass": found_given is not None and found_given >= FOUND_TARGET,
        },
        "eyes": eyes,
        "signals": signals,
        "blinks": blinks,
        "trace": {
            "t": np.round(clip.t, 4).tolist(),
            "face": {"original": found_o.tolist(), "masked": found_m.tolist()},
            "original": {name: np.round(clip.signal(name), 4).tolist() for name in MEASURED},
            "masked": {name: np.round(clip.signal(name, masked=True), 4).tolist() for name in MEASURED},
        },
    }
    stats["targets"] = clip_targets(stats)
    return stats


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _below(stats: dict[str, Any], names: tuple[str, ...], key: str, limit: dict[str, float]) -> bool:
    values = [stats["signals"][n][key] for n in names]
    return all(v is not None and abs(v) <= limit[n] for n, v in zip(names, values, strict=True))


def clip_targets(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The fidelity targets (issue 15's "Must show" table) for one clip: measure, value, met or missed."""
    signals = stats["signals"]
    name = stats["clip"]

    def check(measure: str, target: str, value: str, passed: bool) -> dict[str, Any]:
        return {"clip": name, "measure": measure, "target": target, "check": f"{name}: {measure} {target}",
                "value": value, "pass": bool(passed)}

    def mae(names: tuple[str, ...], digits: int) -> str:
        return " / ".join(_num(signals[n]["mae"], digits) for n in names)

    vergence = signals["vergence_yaw"]
    gaze = ("right_gaze_yaw", "left_gaze_yaw", "right_gaze_pitch", "left_gaze_pitch")
    apertures = ("right_aperture", "left_aperture")
    head = ("head_yaw", "head_pitch", "head_roll")
    with_r = [n for n in R_TARGETS if signals[n]["r_applies"]]
    r_ok = all(signals[n]["pearson_r"] is not None and signals[n]["pearson_r"] >= R_TARGETS[n] for n in with_r)
    r_value = ", ".join(f"{n} {_num(signals[n]['pearson_r'], 3)}" for n in with_r) or "no signal varies"
    found = stats["face_found"]
    eyes = stats["eyes"]
    blinks = stats["blinks"]
    return [
        check("vergence yaw (R - L): MAE / bias", "<= 1.5 / |bias| <= 0.75 deg",
              f"{_num(vergence['mae'], 2)} / {_num(vergence['bias'], 2)}",
              _below(stats, ("vergence_yaw",), "mae", MAE_TARGETS)
              and _below(stats, ("vergence_yaw",), "bias", BIAS_TARGETS)),
        check("vergence pitch (R - L): MAE", "<= 2.0 deg", mae(("vergence_pitch",), 2),
              _below(stats, ("vergence_pitch",), "mae", MAE_TARGETS)),
        check("gaze yaw R / L, pitch R / L: MAE", "<= 2.0 deg", mae(gaze, 2), _below(stats, gaze, "mae", MAE_TARGETS)),
        check("aperture R / L: MAE", "<= 0.03 eye widths", mae(apertures, 3),
              _below(stats, apertures, "mae", MAE_TARGETS)),
        check("head yaw / pitch / roll: MAE", "<= 2.0 deg", mae(head, 2), _below(stats, head, "mae", MAE_TARGETS)),
        check("r where the original varies", ">= 0.9 (gaze pitch >= 0.85)", r_value, r_ok),
        check("blinks per eye R, L (original/masked)", "equal within 1",
              ", ".join(f"{b['original']}/{b['masked']}" for b in blinks.values()),
              all(b["pass"] for b in blinks.values())),
        check("gaze measured in frames with a face R / L", ">= 90%",
              " / ".join(_num(eyes[e]["gaze"]["measured_both"], 3) for e in EYES),
              all(eyes[e]["gaze"]["pass"] for e in EYES)),
        check("masked face found where the original had one", ">= 95%", _num(found["masked_where_original"], 3),
              found["pass"]),
    ]

"""The avatar's closed loop: what our tracker reads on the avatar drawn at known parameters.

:class:`RoundTrip` renders :class:`~proxy.params.MaskParams` and tracks the picture with
the real tracker and retargeter, as ``maskproxy audit`` tracks a masked file: track(render(p)).
:func:`sample_human_range` draws parameters over the human range, every parameter at once
(Latin hypercube), and :func:`round_trip_errors` sums up how far the loop is from the
identity. ``models/make_calibration.py`` fits the avatar's calibration with these;
``tests/avatar/test_calibration.py`` checks it on points held out of the fit, and
``python -m proxy.avatar.response`` prints the same figures.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from types import TracebackType

import numpy as np

from proxy.avatar.calibration import Calibration
from proxy.avatar.renderer import OFFLINE_SUPERSAMPLE, AvatarRenderer
from proxy.avatar.retarget import Retargeter
from proxy.params import MaskParams
from proxy.tracking.tracker import OFFLINE_EYE_SAMPLES, FaceTracker

#: The range the calibration covers, all at once: (low, high) per parameter, in the units our
#: tracker reports (what it reads on patients, and so what the avatar is asked to show). Gaze
#: and lids are per eye and drawn independently for the two eyes; ``upper_share`` is the upper
#: lid's share of the opening; ``camera_yaw`` / ``camera_pitch`` bound each eye's direction
#: seen from the camera (head plus gaze). ``head_scale`` spans a consult's distances (a face
#: filling a third to two thirds of the picture's height).
#:
#: The tracker's iris model reads a turned eye less and less as its iris nears the lid corner:
#: on the avatar (and on people: the shared clips' 1st-99th percentiles of gaze read are about
#: +-45 deg yaw and -7..+21 deg pitch) it reads eyes seen from the camera up to about +-40 deg
#: sideways and -20..+27 deg vertically. Those are the bounds here.
HUMAN_RANGE: dict[str, tuple[float, float]] = {
    "head_yaw": (-40.0, 40.0),
    "head_pitch": (-25.0, 25.0),
    "head_roll": (-20.0, 20.0),
    "head_scale": (0.14, 0.32),
    "head_x": (0.3, 0.7),
    "head_y": (0.32, 0.62),
    "gaze_yaw": (-30.0, 30.0),
    "gaze_pitch": (-15.0, 20.0),
    "aperture": (0.0, 0.8),
    "upper_share": (0.5, 0.85),
    "camera_yaw": (-35.0, 35.0),
    "camera_pitch": (-20.0, 25.0),
}
#: Per-eye parameters of :data:`HUMAN_RANGE`, and the bounds on each eye's direction from the camera.
EYE_KEYS = ("gaze_yaw", "gaze_pitch", "aperture", "upper_share")
CAMERA_KEYS = ("camera_yaw", "camera_pitch")
#: Frame size of the loop: the tracker sees the avatar as it sees a 640x480 camera.
SIZE = (640, 480)
#: Times each picture is tracked: the first from the detector's box, each next from the mesh's
#: own crop of the time before, as a stream follows a still face. The crop settles by the fifth:
#: gaze read over 9 positions of the same face spreads 0.7 deg (SD) after two, 0.1 after five.
TRACK_PASSES = 5


#: A patient in a consult looks at the screen, around the camera, whatever the head's pose: the eyes make
#: up for the head (a head bent down 12 deg looks up about as much). The common direction of the two eyes
#: from the camera (head plus gaze) lies within ``fixation_yaw`` / ``fixation_pitch``; each eye deviates
#: from it by up to ``deviation_yaw`` / ``deviation_pitch`` on its own (a squint, or none).
FIXATION_RANGE: dict[str, tuple[float, float]] = {
    "fixation_yaw": (-12.0, 12.0),
    "fixation_pitch": (-10.0, 15.0),
    "deviation_yaw": (-6.0, 6.0),
    "deviation_pitch": (-3.0, 3.0),
}


def latin_hypercube(n: int, ranges: Sequence[tuple[float, float]], rng: np.random.Generator) -> np.ndarray:
    """(n, len(ranges)) points: each column covers its range in n equal strata, in random order."""
    columns = []
    for low, high in ranges:
        u = (rng.permutation(n) + rng.random(n)) / n
        columns.append(low + u * (high - low))
    return np.stack(columns, axis=1)


def params_from(values: dict[str, float]) -> MaskParams:
    """MaskParams from head values and per-eye values named ``right_*`` / ``left_*`` (see :data:`HUMAN_RANGE`)."""
    params = MaskParams(face=True)
    for key in ("head_yaw", "head_pitch", "head_roll", "head_scale", "head_x", "head_y"):
        setattr(params, key, float(values[key]))
    for side in ("right", "left"):
        aperture = float(values[f"{side}_aperture"])
        share = float(values[f"{side}_upper_share"])
        params = dataclasses.replace(params, **{
            f"{side}_gaze_yaw": float(values[f"{side}_gaze_yaw"]),
            f"{side}_gaze_pitch": float(values[f"{side}_gaze_pitch"]),
            f"{side}_aperture": aperture,
            f"{side}_upper_lid": share * aperture,
            f"{side}_lower_lid": (1.0 - share) * aperture,
        })
    return params


def disc(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shirley and Chiu's concentric map of the unit square onto the unit disc (keeps strata apart)."""
    a, b = 2.0 * u - 1.0, 2.0 * v - 1.0
    outer = np.abs(a) > np.abs(b)
    safe_a = np.where(a == 0, 1.0, a)
    safe_b = np.where(b == 0, 1.0, b)
    radius = np.where(outer, a, b)
    angle = np.where(outer, (math.pi / 4) * (b / safe_a), math.pi / 2 - (math.pi / 4) * (a / safe_b))
    return radius * np.cos(angle), radius * np.sin(angle)


def sample_human_range(n: int, seed: int, ranges: dict[str, tuple[float, float]] | None = None,
                       ) -> list[MaskParams]:
    """``n`` parameter sets over ``ranges`` (default :data:`HUMAN_RANGE`), each eye drawn on its own.

    Each eye's gaze lies in the ellipse inscribed in its yaw and pitch ranges (the eye's field of
    fixation is about elliptical: it does not reach far sideways and far down at once) and, with
    the head's pose, within ``camera_yaw`` / ``camera_pitch``; every other parameter covers its range.
    """
    ranges = ranges or HUMAN_RANGE
    head = [k for k in ranges if k not in EYE_KEYS and k not in CAMERA_KEYS]
    names = head + [f"{side}_{k}" for side in ("right", "left") for k in EYE_KEYS]
    rng = np.random.default_rng(seed)
    chosen: list[MaskParams] = []
    while len(chosen) < n:
        candidates = _sample(4 * n, names, ranges, rng)
        chosen += [p for p in candidates if _within_camera(p, ranges)]
    return chosen[:n]


def sample_fixating(n: int, seed: int, ranges: dict[str, tuple[float, float]] | None = None,
                    fixation: dict[str, tuple[float, float]] | None = None) -> list[MaskParams]:
    """``n`` parameter sets of a patient looking at the screen (see :data:`FIXATION_RANGE`).

    Head pose, place and size and the lids cover ``ranges`` (default :data:`HUMAN_RANGE`); each
    eye's gaze is the fixation's direction minus the head's, plus that eye's own deviation, and
    stays within the gaze ranges. A sample over the human range sees a head bent down with the
    eyes turned up (the commonest posture in front of a laptop) only in its far corner.
    """
    ranges = ranges or HUMAN_RANGE
    fixation = fixation or FIXATION_RANGE
    rng = np.random.default_rng(seed)
    chosen: list[MaskParams] = []
    while len(chosen) < n:
        candidates = sample_human_range(2 * n, int(rng.integers(1 << 31)), ranges)
        keys = ("fixation_yaw", "fixation_pitch", "deviation_yaw", "deviation_yaw", "deviation_pitch",
                "deviation_pitch")
        spread = latin_hypercube(len(candidates), [fixation[k] for k in keys], rng)
        for i, params in enumerate(candidates):
            look_yaw, look_pitch, *deviations = spread[i]
            values: dict[str, float] = {}
            for k, side in enumerate(("right", "left")):
                values[f"{side}_gaze_yaw"] = float(look_yaw + deviations[k] - params.head_yaw)
                values[f"{side}_gaze_pitch"] = float(look_pitch + deviations[2 + k] - params.head_pitch)
            if all(ranges["gaze_yaw"][0] <= values[f"{side}_gaze_yaw"] <= ranges["gaze_yaw"][1]
                   and ranges["gaze_pitch"][0] <= values[f"{side}_gaze_pitch"] <= ranges["gaze_pitch"][1]
                   for side in ("right", "left")):
                chosen.append(dataclasses.replace(params, **values))
    return chosen[:n]


def _within_camera(params: MaskParams, ranges: dict[str, tuple[float, float]]) -> bool:
    """Whether each eye's direction from the camera (head plus gaze) lies within the camera bounds."""
    for side in ("right", "left"):
        for key, head in (("yaw", params.head_yaw), ("pitch", params.head_pitch)):
            low, high = ranges.get(f"camera_{key}", (-math.inf, math.inf))
            if not low <= head + getattr(params, f"{side}_gaze_{key}") <= high:
                return False
    return True


def _sample(n: int, names: list[str], ranges: dict[str, tuple[float, float]], rng: np.random.Generator
            ) -> list[MaskParams]:
    unit = latin_hypercube(n, [(0.0, 1.0)] * len(names), rng)
    values = {}
    for i, name in enumerate(names):
        key = name.split("_", 1)[1] if name.startswith(("right_", "left_")) else name
        low, high = ranges[key]
        values[name] = low + unit[:, i] * (high - low)
    for side in ("right", "left"):
        x, y = disc(unit[:, names.index(f"{side}_gaze_yaw")], unit[:, names.index(f"{side}_gaze_pitch")])
        for key, offset in (("gaze_yaw", x), ("gaze_pitch", y)):
            low, high = ranges[key]
            values[f"{side}_{key}"] = (low + high) / 2 + offset * (high - low) / 2
    return [params_from({k: float(v[i]) for k, v in values.items()}) for i in range(n)]


class RoundTrip:
    """track(render(p)) with the real renderer, tracker and retargeter; ``close()`` when done.

    Defaults are the file settings (``maskproxy mask`` / ``audit``): the avatar supersampled
    and four crops per eye. Each picture is tracked on its own, unsmoothed, as a stream follows
    a still face: found by the detector, then tracked from the mesh's own crop until the crop
    settles (:data:`TRACK_PASSES`).
    """

    def __init__(self, calibration: Calibration | None = None, supersample: int = OFFLINE_SUPERSAMPLE,
                 eye_samples: int = OFFLINE_EYE_SAMPLES, size: tuple[int, int] = SIZE, trim_frames: int = 0) -> None:
        from proxy.avatar.trim import GazeTrim

        self.renderer = AvatarRenderer(*size, calibration=calibration, supersample=supersample)
        self.tracker = FaceTracker(smoothing=False, eye_samples=eye_samples)
        #: With ``trim_frames``, each point is first held that many frames (30 fps) through a fresh
        #: :class:`~proxy.avatar.trim.GazeTrim`, as a stream holding that posture draws it, and the frame after is read.
        self.trim_frames = trim_frames
        self.trim = GazeTrim(eye_samples=eye_samples) if trim_frames > 0 else None

    def __call__(self, params: MaskParams) -> MaskParams | None:
        """What the tracker reads on the avatar drawn at ``params``; None when it finds no face."""
        if self.trim is not None:
            self.trim.reset()
            for i in range(self.trim_frames):
                held = dataclasses.replace(params, t=i / 30.0, frame=i)
                self.trim.observe(held, self.renderer.render(self.trim.apply(held)))
            params = self.trim.apply(params)
        frame = self.renderer.render(params)
        self.tracker.reset()
        track = self.tracker.process(frame)
        for _ in range(TRACK_PASSES - 1):
            if track is None:
                return None
            track = self.tracker.process(frame)
        if track is None:
            return None
        return Retargeter()(track, self.renderer.width, self.renderer.height)

    def close(self) -> None:
        self.renderer.close()
        if self.trim is not None:
            self.trim.close()

    def __enter__(self) -> RoundTrip:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _value(params: MaskParams | None, name: str) -> float:
    value = None if params is None else getattr(params, name)
    return math.nan if value is None else float(value)


def round_trip_errors(wanted: Sequence[MaskParams], measured: Sequence[MaskParams | None],
                      min_aperture: float = 0.2) -> dict[str, np.ndarray]:
    """Signed errors measured - wanted per signal (NaN where not measured).

    Gaze and vergence only where both eyes' wanted apertures are at least ``min_aperture``
    (below it the tracker holds the last gaze, as for a blink).
    """
    def column(params: Iterable[MaskParams | None], name: str) -> np.ndarray:
        return np.array([_value(p, name) for p in params])

    errors = {}
    for name in ("head_yaw", "head_pitch", "head_roll", "right_aperture", "left_aperture",
                 "right_gaze_yaw", "left_gaze_yaw", "right_gaze_pitch", "left_gaze_pitch"):
        errors[name] = column(measured, name) - column(wanted, name)
    open_eyes = ((column(wanted, "right_aperture") >= min_aperture)
                 & (column(wanted, "left_aperture") >= min_aperture))
    for key in ("gaze_yaw", "gaze_pitch"):
        for side in ("right", "left"):
            errors[f"{side}_{key}"][~open_eyes] = math.nan
        errors[f"vergence_{key.split('_')[1]}"] = errors[f"right_{key}"] - errors[f"left_{key}"]
    return errors


#: A gaze reading this far off (deg) is a failure of the reading, not its error: :func:`summary` counts them.
FAILED_READING_DEG = 10.0


def summary(errors: dict[str, np.ndarray]) -> dict[str, float]:
    """Median and 95th percentile of |error| for gaze (both eyes pooled), apertures and head pose,
    the vergence bias (mean signed R - L error) and the fraction of points measured.

    Over a range where our tracker fails outright at some points (heads turned 30-45 deg), a few of them set the
    95th percentile and the mean: the gaze's 80th percentile, the share of gaze readings off by more than
    :data:`FAILED_READING_DEG` and the median vergence error hold still where those move."""
    def pooled(*names: str) -> np.ndarray:
        values = np.concatenate([errors[n] for n in names])
        return np.abs(values[np.isfinite(values)])

    out: dict[str, float] = {}
    groups = {
        "gaze": ("right_gaze_yaw", "left_gaze_yaw", "right_gaze_pitch", "left_gaze_pitch"),
        "gaze_yaw": ("right_gaze_yaw", "left_gaze_yaw"),
        "gaze_pitch": ("right_gaze_pitch", "left_gaze_pitch"),
        "aperture": ("right_aperture", "left_aperture"),
        "head": ("head_yaw", "head_pitch", "head_roll"),
    }
    for group, names in groups.items():
        values = pooled(*names)
        out[f"{group}_median"] = float(np.median(values)) if len(values) else math.nan
        out[f"{group}_p95"] = float(np.percentile(values, 95)) if len(values) else math.nan
    gaze = pooled(*groups["gaze"])
    out["gaze_count"] = float(len(gaze))
    out["gaze_p80"] = float(np.percentile(gaze, 80)) if len(gaze) else math.nan
    out["gaze_failed"] = float((gaze > FAILED_READING_DEG).mean()) if len(gaze) else math.nan
    for key in ("yaw", "pitch"):
        values = errors[f"vergence_{key}"]
        values = values[np.isfinite(values)]
        out[f"vergence_{key}_bias"] = float(values.mean()) if len(values) else math.nan
        out[f"vergence_{key}_median"] = float(np.median(values)) if len(values) else math.nan
    out["measured"] = float(np.isfinite(errors["head_yaw"]).mean())
    return out


def main() -> None:
    """Print the closed loop's figures on a fresh sample of the human range."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--live", action="store_true", help="live settings: no supersampling, one crop per eye")
    parser.add_argument("--trim", type=int, default=0, metavar="FRAMES",
                        help="hold each point this many frames through the gaze trim before reading it (default 0)")
    args = parser.parse_args()
    wanted = sample_human_range(args.samples, args.seed)
    settings: dict[str, int] = {"supersample": 1, "eye_samples": 1} if args.live else {}
    settings["trim_frames"] = args.trim
    with RoundTrip(**settings) as loop:
        measured = [loop(p) for p in wanted]
    for key, value in summary(round_trip_errors(wanted, measured)).items():
        print(f"{key:22s} {value:8.3f}")


if __name__ == "__main__":
    main()

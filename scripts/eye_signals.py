"""Per clip: the tracker's zero (median R - L) and how well per-eye confidence separates good frames from bad.

Usage::

    .venv/bin/python scripts/eye_signals.py ../shared/data/videos [--flip] [--eye-samples 4]

For each clip (and with ``--flip`` its left-right mirrored copy) every frame is tracked as
``maskproxy track`` does, and each eye's reading is kept whether or not the eye was judged
measurable (``Retargeter.read``). A *spike* is what a doctor would misread as an eye movement:

* a single-frame jump: gaze yaw or pitch moves more than 15 deg and comes back by more than 15 deg
  on the next frame;
* a gaze beyond 45 deg (yaw or pitch);
* an aperture above 0.8 eye widths.

Printed per clip: frames with a face, the median R - L gaze yaw over frames where both eyes were
measured, and per eye the frames judged measured and not (with their states), and the spikes among
each: for measured frames on the trace the doctor sees (unmeasured frames are gaps, and a jump needs
measured neighbours), for the others on what would have been shown without the confidence. Gaze
spikes count where the gaze was judged measured vs not, aperture spikes where the lids were.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.avatar.retarget import Retargeter  # noqa: E402
from proxy.files.media import VideoReader  # noqa: E402
from proxy.params import LIDS_ONLY, MaskParams  # noqa: E402
from proxy.tracking.tracker import OFFLINE_EYE_SAMPLES, FaceTracker  # noqa: E402

JUMP_DEG, EXTREME_DEG, EXTREME_APERTURE = 15.0, 45.0, 0.8


def spikes(gaze: np.ndarray, aperture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(gaze spikes, aperture spikes) per frame of one eye; NaN (no face) is never a spike."""
    with np.errstate(invalid="ignore"):
        gaze_spike = (np.abs(gaze) > EXTREME_DEG).any(axis=1)
        before, after = gaze[1:-1] - gaze[:-2], gaze[1:-1] - gaze[2:]
        jump = (np.abs(before) > JUMP_DEG) & (np.abs(after) > JUMP_DEG) & (np.sign(before) == np.sign(after))
        gaze_spike[1:-1] |= jump.any(axis=1)
        return gaze_spike, aperture > EXTREME_APERTURE


def read_clip(path: Path, flip: bool, eye_samples: int) -> list[MaskParams]:
    tracker, retarget = FaceTracker(eye_samples=eye_samples), Retargeter()
    readings = []
    with VideoReader(path) as reader:
        for frame in reader.frames():
            rgb = np.ascontiguousarray(frame.rgb[:, ::-1]) if flip else frame.rgb
            track = tracker.process(rgb, frame.t)
            readings.append(retarget.read(track, rgb.shape[1], rgb.shape[0], frame.index, frame.t))
    return readings


def summarise(name: str, readings: list[MaskParams]) -> dict[str, float]:
    face = np.array([p.face for p in readings])
    both = np.array([p.face and p.right_state == p.left_state == "measured" for p in readings])
    vergence = np.array([p.right_gaze_yaw - p.left_gaze_yaw if p.face else np.nan for p in readings])
    out = {"frames": float(face.sum()), "rl": float(np.median(vergence[both])) if both.any() else float("nan")}
    line = [f"{name:18s} face {int(face.sum()):4d}  R-L {out['rl']:+6.1f}"]
    for side in ("right", "left"):
        states = np.array([getattr(p, f"{side}_state") if p.face else "" for p in readings])
        gaze = np.array([(getattr(p, f"{side}_gaze_yaw"), getattr(p, f"{side}_gaze_pitch")) if p.face
                         else (np.nan, np.nan) for p in readings], dtype=float)
        aperture = np.array([getattr(p, f"{side}_aperture") if p.face else np.nan for p in readings], dtype=float)
        measured = states == "measured"
        lids = measured | np.isin(states, LIDS_ONLY)
        shown_gaze, shown_lids = spikes(np.where(measured[:, None], gaze, np.nan), np.where(lids, aperture, np.nan))
        raw_gaze, raw_lids = spikes(gaze, aperture)
        gaze_spike, lid_spike = np.where(measured, shown_gaze, raw_gaze), np.where(lids, shown_lids, raw_lids)
        unmeasured, no_lids = face & ~measured, face & ~lids
        counts = {
            f"{side}_measured": measured.sum(), f"{side}_unmeasured": unmeasured.sum(),
            f"{side}_spikes_measured": (gaze_spike & measured).sum() + (lid_spike & lids).sum(),
            f"{side}_spikes_unmeasured": (gaze_spike & unmeasured).sum() + (lid_spike & no_lids).sum(),
        }
        out.update({k: float(v) for k, v in counts.items()})
        reasons = Counter(states[unmeasured].tolist())
        good, bad = counts[f"{side}_spikes_measured"], counts[f"{side}_spikes_unmeasured"]
        line.append(f"{side[0].upper()}: measured {int(measured.sum()):4d} spikes {good:3d}"
                    f" | not {int(unmeasured.sum()):4d} spikes {bad:3d} {dict(reasons.most_common())}")
    print("  ".join(line), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=Path)
    parser.add_argument("--flip", action="store_true", help="also the left-right mirrored copy of each clip")
    parser.add_argument("--eye-samples", type=int, default=OFFLINE_EYE_SAMPLES)
    args = parser.parse_args(argv)
    totals: Counter[str] = Counter()
    for path in sorted(args.videos.glob("*.mp4")):
        for flip in (False, True) if args.flip else (False,):
            result = summarise(path.stem + (" (flipped)" if flip else ""), read_clip(path, flip, args.eye_samples))
            for key, value in result.items():
                if key not in ("rl", "frames"):
                    totals[key.split("_", 1)[1]] += value
    measured, unmeasured = totals["measured"], totals["unmeasured"]
    print(f"all eyes: measured {int(measured)} frames, spikes {int(totals['spikes_measured'])} "
          f"({100 * totals['spikes_measured'] / max(measured, 1):.2f}%); not measured {int(unmeasured)} frames, "
          f"spikes {int(totals['spikes_unmeasured'])} ({100 * totals['spikes_unmeasured'] / max(unmeasured, 1):.2f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

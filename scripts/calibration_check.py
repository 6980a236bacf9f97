"""Where the avatar's calibration leaves a false vergence: the closed loop on the clips' own parameters.

Usage::

    .venv/bin/python scripts/calibration_check.py ../shared/data/videos [--calibration FILE ...] [--every 6]

Each clip is tracked as ``maskproxy audit`` tracks an original (file settings); every ``--every``-th
frame whose two gazes were measured gives a parameter set. Each calibration (the shipped one, or
``.npz`` files written by ``models/make_calibration.py --out``) then draws those parameter sets on
their own and our tracker reads them back, track(render(p)), as the fit's held-out check does but on
the postures of real patients. Printed per clip: the vergence (R − L gaze yaw) bias and mean absolute
error of the loop, and each eye's gaze-yaw mean absolute error. ``--sweep`` also prints, for a head
bent down 12° with the eyes up 9° (looking at a laptop's screen), the loop's vergence error as the
wanted vergence goes from −12 to +18°: a slope there is a vergence the avatar squeezes.

The audit's stream (tracking the masked clip frame after frame, smoothed) adds little to the static
loop: on d18 +3.9 against +3.5° of vergence bias. So what this prints is the calibration's share of
the audit's vergence bias.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from proxy.avatar.calibration import Calibration
from proxy.params import MaskParams


def clip_parameters(folder: Path, every: int) -> dict[str, list[MaskParams]]:
    """Each clip's parameter sets with both gazes measured, every ``every``-th frame."""
    from proxy.files.media import VideoReader
    from proxy.pipeline import MaskPipeline
    from proxy.tracking.tracker import OFFLINE_EYE_SAMPLES

    out = {}
    for clip in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".webm", ".mkv")):
        with MaskPipeline(eye_samples=OFFLINE_EYE_SAMPLES) as pipeline, VideoReader(clip) as reader:
            chosen = []
            for frame in reader.frames():
                params = pipeline.track(frame.rgb, frame.t, frame.index)
                if (frame.index % every == 0 and params.face and params.right_gaze_yaw is not None
                        and params.left_gaze_yaw is not None):
                    chosen.append(pipeline.hold(params))
        out[clip.stem] = chosen
        print(f"tracked {clip.name}: {len(chosen)} parameter sets", flush=True)
    return out


def vergence(params: MaskParams | None) -> float:
    right = None if params is None else params.right_gaze_yaw
    left = None if params is None else params.left_gaze_yaw
    return math.nan if right is None or left is None else float(right - left)


def check(name: str, calibration: Calibration, clips: dict[str, list[MaskParams]], sweep: bool) -> None:
    from proxy.avatar.response import RoundTrip, params_from

    print(name)
    with RoundTrip(calibration) as loop:
        biases = []
        for clip, wanted in clips.items():
            read = [loop(p) for p in wanted]
            error = np.array([vergence(m) - vergence(p) for p, m in zip(wanted, read, strict=True)])
            yaw = np.array([[math.nan if m is None or getattr(m, f"{side}_gaze_yaw") is None
                             else getattr(m, f"{side}_gaze_yaw") - getattr(p, f"{side}_gaze_yaw")
                             for side in ("right", "left")] for p, m in zip(wanted, read, strict=True)])
            biases.append(float(np.nanmean(error)))
            print(f"  {clip:12s} {len(wanted):4d} sets  vergence bias {np.nanmean(error):+5.2f}  MAE "
                  f"{np.nanmean(np.abs(error)):4.2f}  gaze yaw MAE R {np.nanmean(np.abs(yaw[:, 0])):4.2f} "
                  f"L {np.nanmean(np.abs(yaw[:, 1])):4.2f}")
        print(f"  mean |vergence bias| over the clips {np.mean(np.abs(biases)):.2f}")
        if sweep:
            for wanted_vergence in (-12, -6, 0, 6, 12, 18):
                values = dict(head_yaw=0.0, head_pitch=-12.0, head_roll=0.0, head_x=0.5, head_y=0.5, head_scale=0.28)
                for side, sign in (("right", 1), ("left", -1)):
                    values.update({f"{side}_gaze_yaw": sign * wanted_vergence / 2, f"{side}_gaze_pitch": 9.0,
                                   f"{side}_aperture": 0.28, f"{side}_upper_share": 0.65})
                print(f"  sweep: wanted R - L {wanted_vergence:+3d}: loop error "
                      f"{vergence(loop(params_from(values))) - wanted_vergence:+.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=Path)
    parser.add_argument("--calibration", type=Path, action="append", default=[],
                        help="a calibration .npz (repeatable; default: the shipped one)")
    parser.add_argument("--every", type=int, default=6, help="use every N-th frame (default 6)")
    parser.add_argument("--sweep", action="store_true", help="also sweep the wanted vergence at one posture")
    args = parser.parse_args()
    from proxy.avatar.calibration import load_calibration

    clips = clip_parameters(args.videos, args.every)
    if not args.calibration:
        check("shipped calibration", load_calibration(), clips, args.sweep)
    for path in args.calibration:
        check(str(path), Calibration.load(path), clips, args.sweep)


if __name__ == "__main__":
    main()

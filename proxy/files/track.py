"""``maskproxy track``: per-frame face and eye signals of a video or photo, as JSON lines.

An eye that could not be measured has ``null`` fields and says why in ``<eye>_state``
(see :mod:`proxy.tracking.confidence`); ``--landmarks`` adds what that decision was made from.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from proxy.avatar.retarget import Retargeter
from proxy.files.media import iter_input
from proxy.tracking.tracker import OFFLINE_EYE_SAMPLES, FaceTrack, FaceTracker


def _points(array: np.ndarray) -> list[list[float]]:
    return np.round(array, 2).tolist()


def track_record(params_json: dict[str, Any], track: FaceTrack | None, landmarks: bool) -> dict[str, Any]:
    """One output line: the mask parameters, plus raw geometry with ``--landmarks``."""
    record = dict(params_json)
    if landmarks and track is not None:
        record["landmarks"] = _points(track.landmarks)
        record["right_eye"] = _points(track.right_eye)
        record["left_eye"] = _points(track.left_eye)
        record["right_iris"] = _points(track.right_iris)
        record["left_iris"] = _points(track.left_iris)
        for side, quality in (("right", track.right_quality), ("left", track.left_quality)):
            if quality is not None:
                record[f"{side}_quality"] = {k: v if v is None else round(v, 4) for k, v in asdict(quality).items()}
    return record


def run_track(path: Path, landmarks: bool = False, out: TextIO = sys.stdout,
              eye_samples: int = OFFLINE_EYE_SAMPLES) -> int:
    """Track every frame of ``path``; returns the number of frames with a face.

    ``eye_samples`` defaults to :data:`~proxy.tracking.tracker.OFFLINE_EYE_SAMPLES`: a file has no frame budget.
    """
    tracker = FaceTracker(eye_samples=eye_samples)
    retarget = Retargeter()
    found = 0
    for frame in iter_input(path):
        track = tracker.process(frame.rgb, frame.t)
        height, width = frame.rgb.shape[:2]
        params = retarget(track, width, height, frame.index, frame.t)
        found += params.face
        out.write(json.dumps(track_record(params.to_json(), track, landmarks)) + "\n")
    out.flush()
    return found

"""``maskproxy track``: JSON lines per frame, clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from proxy.params import LIDS_ONLY

REQUIRED = {"frame", "t", "face", "head_yaw", "head_pitch", "head_roll", "right_gaze_yaw", "right_gaze_pitch",
            "left_gaze_yaw", "left_gaze_pitch", "right_aperture", "left_aperture", "right_state", "left_state"}


def maskproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=300)


def test_track_video(short_clip: Path) -> None:
    done = maskproxy("track", str(short_clip))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) > 30
    assert [r["frame"] for r in rows] == list(range(len(rows)))
    assert all(b["t"] > a["t"] for a, b in zip(rows, rows[1:], strict=False))
    with_face = [r for r in rows if r["face"]]
    assert len(with_face) >= 0.9 * len(rows)
    measured = 0
    for row in with_face:
        assert REQUIRED <= set(row)
        assert "landmarks" not in row
        assert abs(row["head_yaw"]) < 90
        for side in ("right", "left"):
            state, aperture, gaze = row[f"{side}_state"], row[f"{side}_aperture"], row[f"{side}_gaze_yaw"]
            # an eye that could not be measured is null, never a guess
            assert (aperture is None) == (state not in ("measured", *LIDS_ONLY)), row
            assert (gaze is None) == (state != "measured"), row
            assert aperture is None or 0.0 <= aperture < 1.0
            assert gaze is None or abs(gaze) < 90
            measured += state == "measured"
    assert measured >= 1.5 * len(with_face)  # most eyes, most of the time


def test_track_photo_with_landmarks(tmp_path: Path, face_photo: np.ndarray) -> None:
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), face_photo[:, :, ::-1])
    done = maskproxy("track", str(photo), "--landmarks")
    assert done.returncode == 0, done.stderr
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert row["face"] is True and row["frame"] == 0 and row["t"] == 0
    assert np.array(row["landmarks"]).shape == (468, 3)
    assert np.array(row["right_eye"]).shape == (71, 3) and np.array(row["left_eye"]).shape == (71, 3)
    assert np.array(row["right_iris"]).shape == (5, 3) and np.array(row["left_iris"]).shape == (5, 3)
    height, width = face_photo.shape[:2]
    assert 0 <= np.array(row["landmarks"])[:, 0].min() and np.array(row["landmarks"])[:, 0].max() < width


def test_track_photo_without_face(tmp_path: Path) -> None:
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), np.full((240, 320, 3), 200, np.uint8))
    done = maskproxy("track", str(photo), "--landmarks")
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"frame": 0, "t": 0.0, "face": False}


@pytest.mark.parametrize("content", [b"", b"not a video at all" * 100])
def test_unreadable_input_is_a_one_line_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    done = maskproxy("track", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "broken.mp4" in done.stderr


def test_missing_input(tmp_path: Path) -> None:
    done = maskproxy("track", str(tmp_path / "nope.jpg"))
    assert done.returncode == 2 and "no such file" in done.stderr


def test_eye_samples_must_be_positive(tmp_path: Path) -> None:
    done = maskproxy("track", "--eye-samples", "0", str(tmp_path / "any.jpg"))
    assert done.returncode == 2 and "--eye-samples: must be at least 1" in done.stderr


def test_eye_samples_one_is_the_live_setting(tmp_path: Path, face_photo: np.ndarray) -> None:
    """``--eye-samples 1`` measures a photo exactly as a live consult's tracker does."""
    from proxy.avatar.retarget import Retargeter
    from proxy.tracking.tracker import FaceTracker

    photo = tmp_path / "face.png"
    cv2.imwrite(str(photo), face_photo[:, :, ::-1])
    rows = {}
    for samples in ("1", "4"):
        done = maskproxy("track", str(photo), "--eye-samples", samples)
        assert done.returncode == 0, done.stderr
        rows[samples] = json.loads(done.stdout)
    rgb = cv2.imread(str(photo))[:, :, ::-1].copy()
    live = Retargeter()(FaceTracker().process(rgb, 0.0), rgb.shape[1], rgb.shape[0], 0, 0.0).to_json()
    assert live["right_state"] == "measured"
    assert rows["1"]["right_gaze_yaw"] == live["right_gaze_yaw"]
    assert rows["4"]["right_gaze_yaw"] != live["right_gaze_yaw"]
    assert abs(rows["4"]["right_gaze_yaw"] - live["right_gaze_yaw"]) < 5


def test_track_prints_null_for_a_covered_eye(tmp_path: Path, face_photo: np.ndarray) -> None:
    """JSON null, the eye's state and, with --landmarks, what the decision was made from."""
    from proxy.tracking.tracker import FaceTracker

    track = FaceTracker().process(face_photo)
    assert track is not None
    eye = track.left_eye[:16, :2]
    (x0, y0), (x1, y1) = eye.min(0) - 8, eye.max(0) + 8
    covered = face_photo.copy()
    covered[int(y0):int(y1), int(x0):int(x1)] = 0
    photo = tmp_path / "patched.png"
    cv2.imwrite(str(photo), covered[:, :, ::-1])
    done = maskproxy("track", str(photo), "--landmarks")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["left_state"] == "covered" and row["right_state"] == "measured"
    assert '"left_gaze_yaw": null' in done.stdout and row["left_aperture"] is None
    assert isinstance(row["right_gaze_yaw"], float)
    assert row["left_quality"]["texture"] < row["right_quality"]["texture"]

"""``maskproxy track``: JSON lines per frame, clear errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REQUIRED = {"frame", "t", "face", "head_yaw", "head_pitch", "head_roll", "right_gaze_yaw", "right_gaze_pitch",
            "left_gaze_yaw", "left_gaze_pitch", "right_aperture", "left_aperture"}


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
    for row in with_face:
        assert REQUIRED <= set(row)
        assert "landmarks" not in row
        assert 0.0 <= row["right_aperture"] < 1.0 and 0.0 <= row["left_aperture"] < 1.0
        assert abs(row["head_yaw"]) < 90 and abs(row["right_gaze_yaw"]) < 90


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
    assert rows["1"]["right_gaze_yaw"] == live["right_gaze_yaw"]
    assert rows["4"]["right_gaze_yaw"] != live["right_gaze_yaw"]
    assert abs(rows["4"]["right_gaze_yaw"] - live["right_gaze_yaw"]) < 5

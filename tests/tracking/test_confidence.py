"""Per-eye confidence: an eye that cannot be measured is null, and the other eye keeps its signals."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from proxy.avatar.retarget import Retargeter
from proxy.files.media import VideoReader
from proxy.params import EYE_STATES, MaskParams, eye_fields
from proxy.tracking.confidence import GAZE_MIN_APERTURE, MIN_EYE_PX, eye_state
from proxy.tracking.tracker import FaceTrack, FaceTracker

SIDES = ("right", "left")


@pytest.fixture(scope="module")
def tracker() -> FaceTracker:
    return FaceTracker(smoothing=False)


@pytest.fixture(scope="module")
def glasses_frame(videos_dir: Path) -> np.ndarray:
    """A frame of the clip with glasses (the eyes' lowest texture of the shared clips)."""
    clip = videos_dir / "d19.mp4"
    if not clip.exists():
        pytest.skip(f"{clip} not found")
    with VideoReader(clip) as reader:
        for frame in reader.frames():
            if frame.index == 30:
                return frame.rgb
    pytest.skip(f"{clip} has fewer than 31 frames")


def measure(tracker: FaceTracker, rgb: np.ndarray) -> tuple[FaceTrack, MaskParams]:
    tracker.reset()
    track = tracker.process(rgb)
    assert track is not None
    return track, Retargeter()(track, rgb.shape[1], rgb.shape[0])


def cover(rgb: np.ndarray, track: FaceTrack, side: str, kind: str) -> np.ndarray:
    """The picture with one eye covered: a black patch, skin colour, or a hand-like piece of forehead."""
    eye = (track.right_eye if side == "right" else track.left_eye)[:16, :2]
    centre, width = eye.mean(0), float(np.linalg.norm(eye[0] - eye[8]))
    x0, x1 = int(centre[0] - 0.9 * width), int(centre[0] + 0.9 * width)
    y0, y1 = int(centre[1] - 0.6 * width), int(centre[1] + 0.6 * width)
    out = rgb.copy()
    if kind == "black":
        out[y0:y1, x0:x1] = 0
    elif kind == "skin":
        cheek = track.landmarks[205 if side == "right" else 425, :2].astype(int)
        out[y0:y1, x0:x1] = rgb[cheek[1] - 3:cheek[1] + 3, cheek[0] - 3:cheek[0] + 3].reshape(-1, 3).mean(0)
    else:  # textured skin from the forehead, as a hand
        top = track.landmarks[151, :2].astype(int) - [(x1 - x0) // 2, (y1 - y0) // 2]
        out[y0:y1, x0:x1] = rgb[top[1]:top[1] + y1 - y0, top[0]:top[0] + x1 - x0]
    return out


@pytest.mark.parametrize("kind", ["black", "skin", "hand"])
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("source", ["photo", "glasses"])
def test_a_covered_eye_is_null_and_the_other_eye_keeps_its_signals(
        tracker: FaceTracker, request: pytest.FixtureRequest, source: str, side: str, kind: str) -> None:
    rgb = request.getfixturevalue("face_photo" if source == "photo" else "glasses_frame")
    track, clean = measure(tracker, rgb)
    assert clean.right_state == clean.left_state == "measured"
    _, covered = measure(tracker, cover(rgb, track, side, kind))
    other = "left" if side == "right" else "right"
    # the model still draws an open eye under the patch; the pixels say there is none
    assert getattr(covered, f"{side}_state") == "covered"
    assert all(getattr(covered, name) is None for name in eye_fields(side))
    assert getattr(covered, f"{other}_state") == "measured"
    # a painted-over eye moves the face mesh's pose by up to 3 degrees, and gaze is relative to the head
    for name in (f"{other}_gaze_yaw", f"{other}_gaze_pitch"):
        assert getattr(covered, name) == pytest.approx(getattr(clean, name), abs=5.0), name
    assert getattr(covered, f"{other}_aperture") == pytest.approx(getattr(clean, f"{other}_aperture"), abs=0.05)
    assert covered.to_json()[f"{side}_gaze_yaw"] is None  # JSON null on every output


def test_a_face_too_small_for_the_eye_model_has_no_eye_values(tracker: FaceTracker, face_photo: np.ndarray) -> None:
    track, _ = measure(tracker, face_photo)
    width = float(np.linalg.norm(track.right_eye[0, :2] - track.right_eye[8, :2]))
    scale = 0.8 * MIN_EYE_PX / width
    small = cv2.resize(face_photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tracker.reset()
    found = tracker.process(small)
    if found is None:
        pytest.skip("no face found at this size (then there are no eye values either)")
    params = Retargeter()(found, small.shape[1], small.shape[0])
    assert params.face and params.right_state == params.left_state == "too small"
    assert all(getattr(params, name) is None for side in SIDES for name in eye_fields(side))


def test_an_eye_cut_by_the_frame_edge_is_null(tracker: FaceTracker, face_photo: np.ndarray) -> None:
    track, _ = measure(tracker, face_photo)
    cut = int(track.right_eye[:16, 0].mean())  # the picture starts in the middle of the right eye
    tracker.reset()
    found = tracker.process(np.ascontiguousarray(face_photo[:, cut:]))
    if found is None:
        pytest.skip("no face found with half an eye cut off")
    params = Retargeter()(found, face_photo.shape[1] - cut, face_photo.shape[0])
    assert params.right_state == "out of frame" and params.right_gaze_yaw is None and params.right_aperture is None
    assert params.left_state == "measured" and params.left_gaze_yaw is not None


def test_states_from_measurements() -> None:
    """Each check names its own state, in order; a closed eye keeps its lids (its state says so)."""
    from proxy.tracking.tracker import EyeQuality

    good = EyeQuality(width_px=40, in_frame=1.0, texture=0.3, iris_contrast=0.2, iris_ratio=0.42, spread=0.01)
    open_eye, ahead = 0.3, (0.0, 0.0)
    assert eye_state(good, 0.0, open_eye, ahead) == "measured"
    assert eye_state(None, 0.0, open_eye, ahead) == "measured"
    cases = {
        "out of frame": (dict(in_frame=0.5), 0.0, open_eye, ahead),
        "too small": (dict(width_px=MIN_EYE_PX - 1), 0.0, open_eye, ahead),
        "turned away": ({}, 60.0, open_eye, ahead),
        "covered": (dict(texture=0.01), 0.0, open_eye, ahead),
        "closed": ({}, 0.0, GAZE_MIN_APERTURE - 0.01, ahead),
        "no iris": (dict(iris_contrast=0.0), 0.0, open_eye, ahead),
        "unsure": (dict(iris_ratio=0.9), 0.0, open_eye, ahead),
    }
    for state, (change, away, aperture, gaze) in cases.items():
        quality = EyeQuality(**{**good.__dict__, **change})
        assert eye_state(quality, away, aperture, gaze) == state
    assert eye_state(EyeQuality(**{**good.__dict__, "spread": 0.2}), 0.0, open_eye, ahead) == "unsure"
    assert eye_state(good, 0.0, open_eye, (85.0, 0.0)) == "unsure"  # beyond any eye's rotation
    assert eye_state(good, -60.0, open_eye, ahead) == "measured"  # turned towards this eye: nearer, not hidden
    assert set(cases) | {"measured"} == set(EYE_STATES)


def test_null_fields_in_json() -> None:
    params = MaskParams(face=True, right_state="closed", right_gaze_yaw=None, right_gaze_pitch=None)
    data = params.to_json()
    assert data["right_gaze_yaw"] is None and data["right_state"] == "closed" and data["left_gaze_yaw"] == 0.0
    assert MaskParams.from_json(data) == params
    for bad in ({"face": True, "head_yaw": None}, {"face": True, "left_state": "asleep"}):
        with pytest.raises(ValueError):
            MaskParams.from_json(bad)

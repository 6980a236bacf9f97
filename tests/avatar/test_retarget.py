"""The retargeter's gaze geometry: a perspective picture of known eyes reads back their angles.

The scenes are the template head seen by the nominal camera (``proxy.avatar.camera``) with each
eye's line of sight set exactly, so the expected angles are known without a tracker's error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from proxy.avatar.camera import Camera
from proxy.avatar.retarget import KAPPA_DEG, Retargeter, euler_degrees
from proxy.avatar.template import load_template
from proxy.tracking.tracker import LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR, FaceTrack, Roi

WIDTH, HEIGHT = 640, 480
IRIS_RADIUS_CM = 0.585


def rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(-pitch), degrees, the params' convention (see ``euler_degrees``)."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
    return rz @ ry @ rx


def angles(direction: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees of a direction in the head's frame."""
    return (math.degrees(math.atan2(direction[0], direction[2])),
            math.degrees(math.atan2(direction[1], math.hypot(direction[0], direction[2]))))


def scene(distance_cm: float, target: np.ndarray, head: tuple[float, float, float] = (0.0, 0.0, 0.0),
          at: tuple[float, float] = (0.0, 0.0)) -> tuple[FaceTrack, list[tuple[float, float]]]:
    """The template head ``distance_cm`` from the camera, both eyes fixating ``target`` (camera frame, cm).

    ``head`` is (yaw, pitch, roll) and ``at`` the head's sideways/upwards offset from the camera's axis
    (cm). Returns the track a perfect tracker would give and each eye's true line of sight relative to
    the head. The iris sits on the pupillary axis, kappa temporal of the line of sight, as in a real eye.
    """
    template = load_template()
    camera = Camera.nominal(WIDTH, HEIGHT)
    turn = rotation(*head)
    origin = np.array([at[0], at[1], -distance_cm])

    def project(points: np.ndarray) -> np.ndarray:
        cam = origin + points @ turn.T
        u = camera.cx + camera.focal * cam[:, 0] / -cam[:, 2]
        v = camera.cy - camera.focal * cam[:, 1] / -cam[:, 2]
        depth = (origin[2] - cam[:, 2]) * camera.focal / distance_cm  # pixels, smaller is nearer
        return np.stack([u, v, depth], axis=1)

    vertices = template.vertices.astype(np.float64)
    landmarks = project(vertices)
    eyes, irises, truth = [], [], []
    for index, contour in enumerate((RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR)):
        centre = template.eye_centres[index].astype(np.float64)
        sight = turn.T @ (target - (origin + turn @ centre))  # line of sight in the head's frame
        truth.append(angles(sight))
        yaw, pitch = truth[-1]
        temporal = -KAPPA_DEG if index == 0 else KAPPA_DEG  # the right eye's temporal side is the image's left
        pupil = rotation(yaw + temporal, pitch) @ np.array([0.0, 0.0, 1.0])
        iris_centre = centre + template.eye_radius * pupil
        up = np.cross(pupil, [1.0, 0.0, 0.0])
        side = np.cross(up, pupil)
        rim = [iris_centre + IRIS_RADIUS_CM * d for d in (side, up, -side, -up)]
        irises.append(project(np.array([iris_centre, *rim])))
        eye = np.zeros((71, 3))
        eye[:16] = landmarks[list(contour)]
        eyes.append(eye)
    roi = Roi(float(landmarks[:, 0].mean()), float(landmarks[:, 1].mean()), 200.0, 0.0)
    return FaceTrack(landmarks, eyes[0], eyes[1], irises[0], irises[1], 1.0, roi), truth


CAMERA = np.zeros(3)


@pytest.mark.parametrize("distance", [50.0, 100.0])
def test_straight_eyes_fixating_the_camera_converge_by_geometry(distance: float) -> None:
    """R - L is the vergence the camera's distance asks for (+7.3 deg at 50 cm), not zero or negative."""
    track, truth = scene(distance, CAMERA)
    params = Retargeter()(track, WIDTH, HEIGHT)
    vergence = params.right_gaze_yaw - params.left_gaze_yaw
    expected = truth[0][0] - truth[1][0]
    half_ipd, depth = (float(v) for v in load_template().eye_centres[1, [0, 2]])  # eyes behind the origin
    assert expected == pytest.approx(2 * math.degrees(math.atan(half_ipd / (distance - depth))), abs=0.01)
    assert vergence == pytest.approx(expected, abs=0.6)
    assert params.right_gaze_yaw > 0 > params.left_gaze_yaw  # each eye turns nasally, towards the camera
    assert params.right_state == params.left_state == "measured"


@pytest.mark.parametrize(("head", "at"), [((20.0, 0.0, 0.0), (0.0, 0.0)), ((-15.0, 10.0, 8.0), (12.0, -8.0)),
                                          ((0.0, -12.0, 0.0), (-10.0, 15.0))])
def test_turned_and_off_centre_heads_read_each_eyes_own_line_of_sight(head: tuple[float, float, float],
                                                                       at: tuple[float, float]) -> None:
    """The camera's direction from each eye is taken out, wherever the face is in the picture."""
    track, truth = scene(60.0, CAMERA, head, at)
    params = Retargeter()(track, WIDTH, HEIGHT)
    for side, (yaw, pitch) in zip(("right", "left"), truth, strict=True):
        assert getattr(params, f"{side}_gaze_yaw") == pytest.approx(yaw, abs=1.0), side
        assert getattr(params, f"{side}_gaze_pitch") == pytest.approx(pitch, abs=1.0), side
    vergence = params.right_gaze_yaw - params.left_gaze_yaw
    assert vergence == pytest.approx(truth[0][0] - truth[1][0], abs=0.6)


def test_gaze_away_from_the_camera() -> None:
    """A target beside the camera, 25 cm to the side and 10 cm up: both eyes read it, each from where it is."""
    track, truth = scene(60.0, np.array([25.0, 10.0, 0.0]), head=(5.0, 0.0, 0.0))
    params = Retargeter()(track, WIDTH, HEIGHT)
    assert truth[0][0] > 12 and truth[1][0] > 12 and truth[0][1] > 5
    for side, (yaw, pitch) in zip(("right", "left"), truth, strict=True):
        assert getattr(params, f"{side}_gaze_yaw") == pytest.approx(yaw, abs=1.0), side
        assert getattr(params, f"{side}_gaze_pitch") == pytest.approx(pitch, abs=1.0), side


def test_head_pose_is_read_as_seen_from_the_camera() -> None:
    """Head angles are unchanged in meaning: the fit's rotation, relative to the line of sight."""
    track, _ = scene(60.0, CAMERA, head=(20.0, -10.0, 5.0))
    params = Retargeter()(track, WIDTH, HEIGHT)
    assert (params.head_yaw, params.head_pitch, params.head_roll) == pytest.approx((20.0, -10.0, 5.0), abs=1.5)
    assert euler_degrees(rotation(20.0, -10.0, 5.0)) == pytest.approx((20.0, -10.0, 5.0))


def test_an_eye_turned_away_is_null_and_the_other_is_kept() -> None:
    """Head turned 50 deg to the image's left: the patient's right eye is behind the nose."""
    track, truth = scene(60.0, CAMERA, head=(-50.0, 0.0, 0.0))
    params = Retargeter()(track, WIDTH, HEIGHT)
    assert params.right_state == "turned away"
    assert all(getattr(params, name) is None for name in
               ("right_gaze_yaw", "right_gaze_pitch", "right_aperture", "right_upper_lid", "right_mrd1"))
    assert params.left_state == "measured"
    assert params.left_gaze_yaw == pytest.approx(truth[1][0], abs=1.5)


def test_a_closed_eye_keeps_its_lids_and_loses_its_gaze() -> None:
    track, _ = scene(60.0, CAMERA)
    track.right_eye[9:16] = track.right_eye[1:8]  # each upper lid point onto the lower one below it: shut
    params = Retargeter()(track, WIDTH, HEIGHT)
    assert params.right_state == "closed"
    assert params.right_gaze_yaw is None and params.right_gaze_pitch is None and params.right_mrd1 is None
    assert params.right_aperture == pytest.approx(0.0, abs=0.02) and params.right_upper_lid is not None
    assert params.left_state == "measured" and params.left_gaze_yaw is not None


def test_nystagmus_survives_smoothing_and_retargeting() -> None:
    """A 4 Hz, 3 deg horizontal nystagmus keeps its amplitude within 20 % through the files' chain.

    The tracker's own eye smoothing (One Euro, in face-size units) and the retargeter: the eyes of a
    head 60 cm away beat about a point 20 cm beside the camera, sampled at 30 fps.
    """
    from proxy.avatar.hold import EyeHold
    from proxy.tracking.tracker import FaceTracker, roi_from_landmarks

    smoothing = FaceTracker()._eye_filter
    retarget, hold = Retargeter(), EyeHold()
    times = np.arange(0.0, 3.0, 1 / 30)
    target = np.array([20.0, 0.0, 0.0])
    readings, truths = [], []
    for t in times:
        beat = math.radians(3.0 * math.sin(2 * math.pi * 4.0 * t))
        # turn the target about the head's centre: both lines of sight swing by 3 degrees
        swung = np.array([target[0] * math.cos(beat) + 60.0 * math.sin(beat), 0.0,
                          -60.0 + 60.0 * math.cos(beat) - target[0] * math.sin(beat)])
        track, truth = scene(60.0, swung)
        size = roi_from_landmarks(track.landmarks).size
        points = np.concatenate([track.right_eye, track.left_eye, track.right_iris, track.left_iris])
        points = smoothing(points / size, float(t)) * size
        track.right_eye, track.left_eye = points[:71], points[71:142]
        track.right_iris, track.left_iris = points[142:147], points[147:152]
        params = hold(retarget(track, WIDTH, HEIGHT, 0, float(t)))
        readings.append((params.right_gaze_yaw, params.left_gaze_yaw))
        truths.append((truth[0][0], truth[1][0]))
    readings_array, truth_array = np.array(readings)[30:], np.array(truths)[30:]
    for eye in range(2):
        read = readings_array[:, eye] - readings_array[:, eye].mean()
        true = truth_array[:, eye] - truth_array[:, eye].mean()
        assert float(np.std(true)) * math.sqrt(2) == pytest.approx(3.0, abs=0.3)
        gain = float(np.std(read) / np.std(true))
        print(f"nystagmus gain {gain:.3f}")
        assert 0.8 <= gain <= 1.2, gain


def test_turned_away_is_where_the_nose_hides_the_far_eyes_inner_corner() -> None:
    """MAX_AWAY_DEG is the template head's geometry: the nose's side covers the far inner corner from there."""
    from proxy.tracking.confidence import MAX_AWAY_DEG

    vertices = load_template().vertices.astype(np.float64)
    corner = RIGHT_EYE_CONTOUR[8]  # the right eye's inner corner
    # the nose at the corner's height, at least 5 mm towards the midline
    nose = (np.abs(vertices[:, 1] - vertices[corner, 1]) < 0.4) & (vertices[:, 0] > vertices[corner, 0] + 0.5) \
        & (vertices[:, 0] <= 0.05)

    def hidden(yaw: float) -> bool:
        turned = vertices @ rotation(-yaw, 0.0).T  # the right eye is the far one when the head turns to image left
        in_front = turned[nose, 2] > turned[corner, 2]
        return bool((in_front & (turned[nose, 0] < turned[corner, 0])).any())

    assert not hidden(MAX_AWAY_DEG - 1) and hidden(MAX_AWAY_DEG + 1)

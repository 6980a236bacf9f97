"""The avatar's upper body: a neutral neck, shoulders and top, posed from the head's parameters alone.

Real GL (EGL) renders; the geometry is checked in centimetres against human sizes.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from proxy.avatar.body import (
    CHIN_Y,
    NECK_SKIN,
    PITCH_SHARE,
    PIVOT,
    ROLL_SHARE,
    SHOULDER_WIDTH_CM,
    TOP,
    YAW_SHARE,
    UpperBody,
    body_angles,
    surface,
)
from proxy.avatar.calibration import Calibration
from proxy.avatar.renderer import OUTER_CORNERS, AvatarRenderer, head_rotation
from proxy.avatar.template import load_template
from proxy.params import MaskParams

#: A framing that shows the shoulders at 640x480: the face a little higher and smaller than the default.
FRAMED = MaskParams(face=True, head_y=0.4, head_scale=0.2)


@pytest.fixture(scope="module")
def renderer() -> AvatarRenderer:
    """The renderer as shipped (its calibration may tilt the drawn head a little), in weak perspective
    (centimetres map to the same pixels everywhere, as these checks of the body's size need)."""
    with AvatarRenderer(640, 480, perspective=False) as r:
        yield r


@pytest.fixture(scope="module")
def exact() -> AvatarRenderer:
    """A renderer that draws the head pose as given, for checks of where the body lands in pixels."""
    with AvatarRenderer(640, 480, calibration=Calibration.identity(), perspective=False) as r:
        yield r


@pytest.fixture(scope="module")
def body() -> UpperBody:
    return UpperBody()


def pixels_per_cm(params: MaskParams, height: int) -> float:
    corners = load_template().vertices[list(OUTER_CORNERS)]
    return params.head_scale * height / float(np.linalg.norm(corners[1] - corners[0]))


def chroma(rgb: np.ndarray) -> np.ndarray:
    """Colour direction (unit RGB vector): the same for a material however brightly it is lit."""
    rgb = np.asarray(rgb, dtype=float)
    return rgb / np.linalg.norm(rgb, axis=-1, keepdims=True)


def top_mask(frame: np.ndarray) -> np.ndarray:
    """Pixels of the top's colour (whatever their shading)."""
    return (chroma(frame.astype(float) + 1e-3) @ chroma(TOP) > 0.995) & (frame.sum(-1) > 30)


# ---- geometry, in cm --------------------------------------------------------------------


def test_neck_and_shoulders_are_human_sized(body: UpperBody) -> None:
    """8-10 cm of neck between the chin and the collar at the front, a neck 10-13 cm wide, shoulders
    36-46 cm across: a person, not a head on a pole."""
    template = load_template()
    assert CHIN_Y == pytest.approx(float(template.vertices[152, 1]), abs=0.02)  # the template's chin
    skin = np.all(np.isclose(body.colours, NECK_SKIN), axis=1)
    top = np.all(np.isclose(body.colours, TOP), axis=1)
    assert skin.any() and top.any() and not (skin & top).any()
    x, y, z = body.rest.T
    front = (np.abs(x) < 0.5) & (z > PIVOT[2])
    collar_front = float(y[skin & front].min())
    assert 8.0 <= CHIN_Y - collar_front <= 10.0
    assert float(y[top & front].max()) == pytest.approx(collar_front)  # the top starts there
    under_jaw = skin & (y < CHIN_Y - 1.0) & (y > CHIN_Y - 3.0)
    assert 10.0 <= float(x[under_jaw].max() - x[under_jaw].min()) <= 13.0
    shoulders = top & (y > -35.0)
    assert 36.0 <= float(x[shoulders].max() - x[shoulders].min()) <= 46.0
    # the outline is 90% of the shoulders' width 9-13 cm below the chin (about the collar bones' level)
    heights = np.arange(-10.0, -30.0, -0.1)
    outline = surface(heights, np.zeros_like(heights))[:, 0]
    assert 9.0 <= CHIN_Y - float(heights[np.argmax(outline > 0.9 * SHOULDER_WIDTH_CM / 2)]) <= 13.0
    assert float(y.max()) > CHIN_Y + 4.0  # the neck's top is inside the head


def test_body_turns_by_a_damped_share_of_roll_and_yaw_and_not_with_pitch(body: UpperBody) -> None:
    assert (YAW_SHARE, ROLL_SHARE) == (0.3, 0.3) and PITCH_SHARE == 0.0
    assert body_angles(40.0, 25.0, -20.0) == pytest.approx((12.0, 0.0, -6.0))

    def shoulder_line(yaw: float, pitch: float, roll: float) -> np.ndarray:
        head = head_rotation(yaw, pitch, roll)
        positions, _ = body.pose(head, head_rotation(*body_angles(yaw, pitch, roll)))
        # the tips are rest vertices: find them, posed
        tips = [int(np.argmin(np.linalg.norm(body.rest - tip, axis=1))) for tip in body.shoulder_tips]
        return positions[tips[0]] - positions[tips[1]]  # image left to image right

    level = shoulder_line(0.0, 0.0, 0.0)
    assert level[1] == pytest.approx(0.0, abs=1e-4) and level[2] == pytest.approx(0.0, abs=1e-4)
    rolled = shoulder_line(0.0, 0.0, 20.0)  # counter-clockwise on screen: the image-right shoulder rises
    assert math.degrees(math.atan2(rolled[1], rolled[0])) == pytest.approx(6.0, abs=0.01)
    turned = shoulder_line(40.0, 0.0, 0.0)  # yaw towards the image's right: the right shoulder goes back
    assert math.degrees(math.atan2(-turned[2], turned[0])) == pytest.approx(12.0, abs=0.01)
    nodded = shoulder_line(0.0, 30.0, 0.0)
    assert nodded == pytest.approx(level, abs=1e-4)


def test_neck_top_moves_with_the_head_and_the_torso_with_the_pivot(body: UpperBody) -> None:
    """The neck's top is posed exactly as the head is, so it stays inside the head; below the bend the
    body is rigid, hung from the head's neck pivot."""
    head = head_rotation(25.0, -15.0, 18.0)
    turned = head_rotation(*body_angles(25.0, -15.0, 18.0))
    positions, normals = body.pose(head, turned)
    top = body.follow == 1.0
    rigid = body.follow == 0.0
    assert top.sum() > 48 and rigid.sum() > len(body.rest) / 2
    assert positions[top] == pytest.approx(body.rest[top] @ head.T, abs=1e-4)
    expected = (body.rest[rigid] - PIVOT) @ turned.T + head @ PIVOT
    assert positions[rigid] == pytest.approx(expected, abs=1e-4)
    assert np.linalg.norm(normals, axis=1) == pytest.approx(1.0, abs=1e-5)


# ---- drawn: real GL ---------------------------------------------------------------------


def test_shoulders_in_the_tops_colour_below_the_head(exact: AvatarRenderer) -> None:
    frame = exact.render(FRAMED).astype(int)
    scale = pixels_per_cm(FRAMED, 480)
    cx, cy = FRAMED.head_x * 640, FRAMED.head_y * 480

    def at(x_cm: float, y_cm: float) -> np.ndarray:
        return frame[round(cy - y_cm * scale), round(cx + x_cm * scale)]

    background = frame[0, 0]
    for x_cm in (-16.0, -8.0, 0.0, 8.0, 16.0):  # the top, across the chest below the shoulders
        assert chroma(at(x_cm, -25.0)) @ chroma(TOP) > 0.995, x_cm
        assert np.abs(at(x_cm, -25.0) - background).sum() > 80
    for x_cm in (-24.0, 24.0):  # beside the shoulders: background
        assert np.array_equal(at(x_cm, -25.0), background)
    neck = at(0.0, CHIN_Y - 3.0)  # under the chin: skin, not the top
    assert chroma(neck) @ chroma(NECK_SKIN) > 0.995
    for x_cm in (-9.0, 9.0):  # beside the neck: background
        assert np.array_equal(at(x_cm, CHIN_Y - 3.0), background)
    rows = np.nonzero(top_mask(frame.astype(np.uint8))[:, round(cx)])[0]
    assert (rows.min() - cy) / scale == pytest.approx(-(CHIN_Y - 9.0), abs=0.3)  # the collar


def test_torso_is_drawn_from_the_head_pose_alone(renderer: AvatarRenderer) -> None:
    """Below the head, only the head's pose and place count: eyes, lids, brows, mouth, frame number
    and time change nothing there, and the same parameters give the same bytes whatever came before."""
    pose = dataclasses.replace(FRAMED, head_yaw=15.0, head_pitch=-6.0, head_roll=5.0)
    other = dataclasses.replace(pose, frame=999, t=33.3, right_gaze_yaw=20.0, left_gaze_pitch=-15.0,
                                right_upper_lid=0.05, left_lower_lid=0.3, right_brow=0.3, mouth_open=0.4,
                                mouth_smile=0.3)
    first = renderer.render(pose)
    renderer.render(MaskParams(face=True, head_x=0.3, head_roll=-25.0))
    assert np.array_equal(renderer.render(pose), first)
    below_chin = round(pose.head_y * 480 - (CHIN_Y - 4.0) * pixels_per_cm(pose, 480))
    changed = renderer.render(other)
    assert not np.array_equal(changed[:below_chin], first[:below_chin])  # the face did change
    assert np.array_equal(changed[below_chin:], first[below_chin:])
    assert top_mask(first[below_chin:]).mean() > 0.2  # and there is a torso to compare


def test_body_follows_the_heads_place_and_size(exact: AvatarRenderer) -> None:
    """(Drawn as given: the shipped calibration turns the drawn head a little with its place, as our tracker
    reads a head off the camera's axis a little turned.)"""
    renderer = exact
    base = renderer.render(FRAMED)
    moved = renderer.render(dataclasses.replace(FRAMED, head_x=0.6, head_y=0.45))
    dx, dy = round(0.1 * 640), round(0.05 * 480)
    a, b = top_mask(base)[: 480 - dy, : 640 - dx], top_mask(moved)[dy:, dx:]
    assert (a & b).sum() / (a | b).sum() > 0.99
    smaller = dataclasses.replace(FRAMED, head_scale=0.15)
    for params, frame in ((FRAMED, base), (smaller, renderer.render(smaller))):
        row = round(params.head_y * 480 + 24.0 * pixels_per_cm(params, 480))
        columns = np.nonzero(top_mask(frame)[row])[0]
        width_cm = (columns.max() - columns.min() + 1) / pixels_per_cm(params, 480)
        # the same body in cm whatever the face's size: as wide as the mesh is there
        assert width_cm == pytest.approx(2 * surface(np.array(-24.0), np.array(0.0))[0], abs=0.4)


def test_drawn_body_tilts_by_a_damped_share_of_the_heads_roll() -> None:
    """The whole top, seen small in a large picture, turns by 0.3 of the drawn head roll on screen."""
    far = MaskParams(face=True, head_y=0.25, head_scale=0.05)
    with AvatarRenderer(960, 960, calibration=Calibration.identity(), perspective=False) as r:
        def tilt(roll: float) -> float:
            mask = top_mask(r.render(dataclasses.replace(far, head_roll=roll)))
            assert not mask[-1].any()  # the whole body is in the picture
            m = cv2.moments(mask.astype(np.uint8), binaryImage=True)
            # the blob's long axis from the vertical, counter-clockwise on screen (image y points down)
            return 0.5 * math.degrees(math.atan2(2 * m["mu11"], m["mu02"] - m["mu20"]))

        assert tilt(0.0) == pytest.approx(0.0, abs=0.2)
        for roll in (20.0, -15.0):
            angle = tilt(roll)
            assert angle == pytest.approx(ROLL_SHARE * roll, abs=0.6)
            assert abs(angle) < 0.5 * abs(roll)

"""The eye close-up (issue 16): the same avatar, framed on both eyes, drawn by real GL."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from proxy.avatar.closeup import CLOSEUP_SIZE, EyeCloseupRenderer
from proxy.avatar.renderer import AvatarRenderer
from proxy.params import MaskParams

LOOKING = MaskParams(face=True, t=1.0, right_gaze_yaw=12.0, left_gaze_yaw=8.0, right_gaze_pitch=4.0,
                     left_gaze_pitch=-3.0, right_upper_lid=0.12, right_aperture=0.24)


@pytest.fixture(scope="module")
def closeup() -> Iterator[EyeCloseupRenderer]:
    with EyeCloseupRenderer() as renderer:
        yield renderer


def pupil_column(rgb: np.ndarray, left: int, right: int, top: int = 0, bottom: int | None = None) -> float:
    """Mean column of the pupil's pixels (near black: the lash lines, brows and hair are lighter) between columns
    ``left`` and ``right`` (and rows ``top`` and ``bottom``: in the face view the eyes' band)."""
    part = rgb[top:bottom, left:right].astype(np.int16).sum(axis=2)
    rows, columns = np.nonzero(part <= 60)
    return float(columns.mean()) + left


def test_the_eyes_stay_centred_and_level_wherever_the_head_is(closeup: EyeCloseupRenderer) -> None:
    picture = closeup.render(LOOKING)
    assert picture.shape == (CLOSEUP_SIZE[1], CLOSEUP_SIZE[0], 3)
    moved = dataclasses.replace(LOOKING, head_x=0.2, head_y=0.7, head_scale=0.12, head_yaw=25.0, head_pitch=-10.0,
                                head_roll=12.0)
    assert np.array_equal(closeup.render(moved), picture)  # only the eyes and lids are drawn differently
    # both pupils are in their own half, at the same height, the right eye (the patient's) on the picture's left
    width = picture.shape[1]
    right_eye, left_eye = pupil_column(picture, 0, width // 2), pupil_column(picture, width // 2, width)
    assert width * 0.1 < right_eye < width * 0.45 and width * 0.55 < left_eye < width * 0.9


def test_without_stabilizing_the_head_turn_shows() -> None:
    with EyeCloseupRenderer(stabilize=False) as renderer:
        ahead = renderer.render(LOOKING)
        turned = renderer.render(dataclasses.replace(LOOKING, head_yaw=25.0))
        placed = renderer.render(dataclasses.replace(LOOKING, head_x=0.2, head_scale=0.12))
    assert np.array_equal(placed, ahead)  # the face's place in the camera picture still does not matter
    assert np.abs(turned.astype(np.int16) - ahead).mean() > 5


def test_the_closeup_shows_an_eye_movement_several_times_larger_than_the_face_view(
        closeup: EyeCloseupRenderer) -> None:
    straight = dataclasses.replace(LOOKING, right_gaze_yaw=0.0)
    aside = dataclasses.replace(LOOKING, right_gaze_yaw=15.0)
    width = CLOSEUP_SIZE[0]
    near = pupil_column(closeup.render(aside), 0, width // 2) - pupil_column(closeup.render(straight), 0, width // 2)
    with AvatarRenderer(640, 480, calibration=closeup.calibration) as face:
        # the right eye sits left of the face's centre (head_x 0.5 of 640 px), a little above head_y
        far = (pupil_column(face.render(aside), 200, 320, 140, 216)
               - pupil_column(face.render(straight), 200, 320, 140, 216))
    assert near > 10 and far > 1, (near, far)
    assert near / far > 4, f"the close-up moves the pupil {near:.1f} px, the face view {far:.1f} px"


def test_no_face_is_the_neutral_avatar(closeup: EyeCloseupRenderer) -> None:
    lost = dataclasses.replace(LOOKING, face=False)
    assert np.array_equal(closeup.render(lost), closeup.render(MaskParams.neutral(t=LOOKING.t)))
    assert not np.array_equal(closeup.render(lost), closeup.render(LOOKING))


def test_a_fill_outside_the_picture_is_refused() -> None:
    with pytest.raises(ValueError, match="fill"):
        EyeCloseupRenderer(fill=1.5)

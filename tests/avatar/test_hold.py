"""EyeHold: what the avatar draws for an eye that was not measured."""

from __future__ import annotations

import pytest

from proxy.avatar.hold import EASE_S, HOLD_S, EyeHold
from proxy.params import MaskParams, eye_fields

NEUTRAL = MaskParams()


def frame(t: float, **eye: float | None) -> MaskParams:
    return MaskParams(face=True, t=t, **eye)


def test_measured_values_pass_unchanged() -> None:
    hold = EyeHold()
    for i in range(10):
        params = frame(i / 30, right_gaze_yaw=20.0 * (-1) ** i, left_aperture=0.1 * i)  # a fast beat stays a beat
        assert hold(params) is params


def test_a_missing_eye_keeps_its_last_value_then_eases_to_neutral() -> None:
    hold = EyeHold()
    hold(frame(0.0, right_gaze_yaw=25.0, right_aperture=0.5))
    missing = dict.fromkeys(eye_fields("right"))
    drawn = [hold(frame(t, **missing)) for t in (0.1, HOLD_S, HOLD_S + EASE_S / 2, HOLD_S + EASE_S, 2.0)]
    assert [d.right_gaze_yaw for d in drawn] == pytest.approx([25.0, 25.0, 12.5, 0.0, 0.0])
    assert [d.right_aperture for d in drawn] == pytest.approx([0.5, 0.5, (0.5 + NEUTRAL.right_aperture) / 2,
                                                               NEUTRAL.right_aperture, NEUTRAL.right_aperture])
    for d in drawn:  # the renderer never gets None; the other eye is untouched
        assert all(getattr(d, name) is not None for side in ("right", "left") for name in eye_fields(side))
        assert d.left_gaze_yaw == NEUTRAL.left_gaze_yaw
    back = hold(frame(2.1, right_gaze_yaw=-10.0))
    assert back.right_gaze_yaw == -10.0  # a measurement is drawn at once


def test_a_closed_eye_keeps_its_gaze_through_a_blink() -> None:
    hold = EyeHold()
    hold(frame(0.0, left_gaze_yaw=-12.0, left_gaze_pitch=6.0))
    for t in (0.033, 0.1, 0.2, 0.3):
        drawn = hold(frame(t, left_gaze_yaw=None, left_gaze_pitch=None, left_aperture=0.05))
        assert (drawn.left_gaze_yaw, drawn.left_gaze_pitch, drawn.left_aperture) == (-12.0, 6.0, 0.05)


def test_a_new_face_starts_from_neutral() -> None:
    hold = EyeHold()
    hold(frame(0.0, right_gaze_yaw=30.0))
    lost = MaskParams.neutral(1, 0.1)
    assert hold(lost) is lost
    assert hold(frame(0.2, right_gaze_yaw=None)).right_gaze_yaw == NEUTRAL.right_gaze_yaw

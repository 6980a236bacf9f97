"""The measures on what the tracker reads back from the avatar: render -> track -> measure, real GL and models."""

from __future__ import annotations

import numpy as np

from proxy.avatar.renderer import AvatarRenderer
from proxy.avatar.retarget import Retargeter
from proxy.exam.measures import nystagmus
from proxy.exam.traces import Traces
from proxy.params import MaskParams
from proxy.tracking.tracker import FaceTracker
from tests.exam.streams import jerk_nystagmus, times


def round_trip(t: np.ndarray, yaw: np.ndarray, pitch: float = 2.0) -> list[MaskParams]:
    """Draw both eyes at ``yaw`` (deg) over time ``t`` and measure each frame with the live path's tracker."""
    tracker, retarget = FaceTracker(), Retargeter()
    measured = []
    with AvatarRenderer(640, 480) as renderer:
        for index, (ti, angle) in enumerate(zip(t, yaw, strict=True)):
            drawn = MaskParams(frame=index, t=float(ti), face=True, right_gaze_yaw=float(angle),
                               left_gaze_yaw=float(angle), right_gaze_pitch=pitch, left_gaze_pitch=pitch)
            measured.append(retarget(tracker.process(renderer.render(drawn), float(ti)), 640, 480, index,
                                     float(ti)))
    assert sum(p.face for p in measured) >= 0.95 * len(t), "the tracker lost the avatar"
    return measured


def test_jerk_nystagmus_survives_render_track_measure() -> None:
    """A 3 Hz, 4 deg horizontal jerk nystagmus drawn on the avatar for 4 s at 30 fps is found at its frequency.

    The live path's tracker (with its smoothing) and retargeter measure each rendered frame; the detector then
    sees only what a doctor's page would receive.
    """
    t = times(4.0)
    measured = round_trip(t, jerk_nystagmus(t, 3.0, 4.0))
    results = {r.eye: r for r in nystagmus(Traces.from_params(measured))}
    for eye in ("right", "left"):
        result = results[eye]
        print(eye, result.to_json())
        assert result.detected, result.reason
        assert abs(result.frequency_hz - 3.0) <= 0.2
        assert result.horizontal_deg > result.vertical_deg
        assert result.beating == "right-beating"  # the fast phase goes to - yaw: the patient's right
        # How much of the 4 deg comes back is the avatar's calibration (issue 15: before the fitted
        # calibration the right eye read 2.2 and the left 5.8 deg; with it the left reads about 7.2, the fit's
        # local gain varying from place to place); here only a bound that catches a broken path.
        assert 0.3 * 4.0 <= result.amplitude_deg <= 2.0 * 4.0

def test_a_saccade_and_drift_through_the_round_trip_are_not_nystagmus() -> None:
    """Real tracker jitter on a moving but non-oscillating eye: a 10 deg saccade and a slow drift claim nothing."""
    t = times(4.0)
    measured = round_trip(t, np.where(t >= 2.0, 10.0, 0.0) + 1.5 * t - 3.0)
    for result in nystagmus(Traces.from_params(measured)):
        assert not result.detected, result.to_json()

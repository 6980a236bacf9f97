"""Screen geometry and the guided tests' target schedules: where the dot is, in degrees and on the screen."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from proxy.exam.screen import (
    CARD_WIDTH_MM,
    DEFAULT_SCREEN,
    Screen,
    distance_from_face,
    px_per_mm_from_card,
    px_per_mm_from_diagonal,
)
from proxy.exam.targets import LEAD_S, build, calibration_targets, fixation, nine_positions, pursuit, saccades

LAPTOP = Screen(1440.0, 900.0, px_per_mm_from_card(323.0), 550.0, "card", "typed")


def test_screen_scale_from_a_card_ruler_or_a_diagonal() -> None:
    assert px_per_mm_from_card(CARD_WIDTH_MM * 4) == pytest.approx(4.0)
    # a 1920x1080 (CSS px) screen of 23.8 inches: 92.6 px per inch
    assert px_per_mm_from_diagonal(1920, 1080, 23.8) * 25.4 == pytest.approx(92.56, abs=0.05)
    with pytest.raises(ValueError):
        px_per_mm_from_card(0)
    screen = Screen.from_report(1440, 900, card_css_px=323.0, diagonal_in=13.3, head_scale=0.2)
    assert screen.scale_source == "card" and screen.distance_source == "face" and screen.measured
    assert Screen.from_report(1440, 900, diagonal_in=13.3, distance_mm=500).distance_source == "typed"
    assert not Screen.from_report(1440, 900).measured


def test_viewing_distance_from_the_face_size() -> None:
    """Outer canthi 90 mm apart, a 70 deg diagonal field of view, 4:3: a face twice as large is half as far."""
    near, far = distance_from_face(0.3), distance_from_face(0.15)
    assert far == pytest.approx(2 * near)
    # the formula by hand: f = (diagonal / 2) / tan(35 deg) with the frame 1 high and 4/3 wide
    focal = math.hypot(1, 4 / 3) / 2 / math.tan(math.radians(35))
    assert near == pytest.approx(focal * 90 / 0.3)
    assert 300 < near < 400 and 600 < far < 800  # consult distances


def test_angles_to_the_screen_and_back_with_the_patients_sides() -> None:
    screen = LAPTOP
    x, y = screen.to_screen(0.0, 0.0)
    assert (x, y) == (0.5, 0.5)
    # + yaw is the camera picture's right: the patient's left, the screen's left as they face it
    x, y = screen.to_screen(10.0, 5.0)
    assert x < 0.5 and y < 0.5
    offset_px = (0.5 - x) * screen.width_px
    assert offset_px == pytest.approx(screen.distance_mm * math.tan(math.radians(10)) * screen.px_per_mm)
    yaw, pitch = screen.to_degrees(*screen.to_screen(np.array([-12.0, 3.0]), np.array([4.0, -7.0])))
    assert np.allclose(yaw, [-12, 3]) and np.allclose(pitch, [4, -7])


def test_pursuit_is_a_known_sinusoid_horizontally_then_vertically() -> None:
    schedule = pursuit(0.2, 10.0, cycles=3)
    assert schedule.duration_s == pytest.approx(2 * (1.0 + 15.0))
    horizontal = 1.0 + 1.25  # a quarter cycle into the horizontal sweep: the peak
    assert np.allclose(schedule.position(horizontal), [[10.0, 0.0]])
    assert np.allclose(schedule.position(17.0 + 1.25), [[0.0, 10.0]])
    assert np.allclose(schedule.position([0.5]), [[0.0, 0.0]])
    assert np.isnan(schedule.position([-0.1, 32.5])).all()
    t = np.arange(1.0, 16.0, 0.01)
    numeric = np.gradient(schedule.position(t)[:, 0], t)
    assert np.allclose(schedule.velocity(t)[1:-1, 0], numeric[1:-1], atol=0.01)
    assert np.abs(schedule.velocity(t)[:, 0]).max() == pytest.approx(2 * math.pi * 0.2 * 10, rel=1e-3)


def test_saccades_are_reproducible_and_unpredictable() -> None:
    a, b, c = saccades(seed=7), saccades(seed=7), saccades(seed=8)
    assert a == b and a != c
    steps = a.steps()
    assert len(steps) == 12
    assert all(abs(abs(step.size) - 10.0) < 1e-9 for step in steps)
    assert {step.axis for step in steps} == {0, 1}
    outward = [step.end for step in steps if step.end != (0.0, 0.0)]
    assert {math.copysign(1, sum(point)) for point in outward} == {-1.0, 1.0}  # both sides
    holds = np.concatenate([np.diff([step.t for step in steps if step.axis == axis]) for axis in (0, 1)])
    assert holds.min() >= 0.75 * 1.5 - 1e-9 and holds.max() <= 1.25 * 1.5 + 1e-9 and np.ptp(holds) > 0.1


def test_nine_positions_are_named_from_the_patients_side() -> None:
    schedule = nine_positions(15.0, 3.0)
    named = {s.label: (s.yaw, s.pitch) for s in schedule.segments}
    assert len(named) == 9 and named["centre"] == (0.0, 0.0)
    assert named["right"] == (-15.0, 0.0)  # the patient's right: the eyes turn to the picture's left
    assert named["up left"] == (15.0, 15.0)
    assert schedule.duration_s == 27.0


def test_schedules_shrink_to_fit_the_screen() -> None:
    """On a small, far screen the dot stays inside it, and the options say what was really shown."""
    small = Screen(1280.0, 800.0, 3.78, 800.0)
    yaw_max, pitch_max = small.max_angles()
    schedule = nine_positions(25.0, 2.0, screen=small)
    x, y = small.to_screen(*schedule.position(np.arange(0, 18, 0.1)).T)
    assert x.min() >= 0.04 and x.max() <= 0.96 and y.min() >= 0.04 and y.max() <= 0.96
    assert schedule.options["eccentricity_yaw_deg"] == pytest.approx(yaw_max)
    assert schedule.options["eccentricity_pitch_deg"] == pytest.approx(pitch_max) and pitch_max < 25
    assert pursuit(0.2, 25.0, screen=small).options["amplitude_deg"] == pytest.approx(pitch_max)


def test_patient_command_is_small_json_the_page_can_draw() -> None:
    schedule = saccades(count=40, screen=LAPTOP)
    command = schedule.to_command(LAPTOP, 4)
    text = json.dumps(command)
    assert len(text) < 16_000
    body = json.loads(text)["exam"]
    assert body["id"] == 4 and body["lead_s"] == LEAD_S and body["instruction"]
    assert body["screen"]["distance_css_px"] == pytest.approx(LAPTOP.distance_px, abs=0.1)
    # the page's formula: x = W/2 - D tan(yaw + amp_yaw sin(2 pi hz (t - t0)))
    segment = body["segments"][1]
    x = body["screen"]["width_css_px"] / 2 - body["screen"]["distance_css_px"] * math.tan(math.radians(segment["yaw"]))
    assert x / LAPTOP.width_px == pytest.approx(LAPTOP.to_screen(schedule.segments[1].yaw, 0.0)[0], abs=1e-3)
    calibration = calibration_targets("left", screen=LAPTOP).to_command(LAPTOP, 5)
    assert "RIGHT eye" in calibration["exam"]["instruction"]


def test_build_from_validated_options() -> None:
    assert build("fixation", {"duration_s": 5.0}) == fixation(5.0)
    assert build("calibration", {"eye": "right", "eccentricity_deg": 8.0, "hold_s": 2.0}).duration_s == 10.0
    with pytest.raises(ValueError):
        build("stop", {})
    assert DEFAULT_SCREEN.max_angles()[0] > 10

"""The avatar's calibration: track(render(p)) = p over the human range, checked on points held out of the fit.

Real OpenGL, the real tracker and retargeter with the file settings (``RoundTrip``), the shipped
``models/avatar_calibration.npz``. The held-out points come from a seed the fit never used.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from models.make_calibration import CONSULT_RANGE, READABLE_APERTURE, fit_polynomial
from proxy.avatar.calibration import Calibration, load_calibration, monomial_powers
from proxy.avatar.mesh import LEFT_EYE_CONTOUR, RIGHT_EYE_CONTOUR, AvatarMesh
from proxy.avatar.renderer import AvatarRenderer
from proxy.avatar.response import HUMAN_RANGE, RoundTrip, round_trip_errors, sample_human_range, summary
from proxy.avatar.retarget import Retargeter
from proxy.avatar.template import load_template
from proxy.params import MaskParams
from proxy.tracking.blinks import CLOSED, count_blinks
from proxy.tracking.tracker import FaceTracker
from tests.avatar.waves import sine_fit

#: Held-out points: never a seed of models/make_calibration.py (which uses 1, 101-103 and 10000).
HELD_OUT_SEED, HELD_OUT_POINTS = 424242, 60
#: Wide open: both lids well away from the iris.
WIDE = MaskParams(face=True, head_scale=0.3, right_aperture=0.8, left_aperture=0.8, right_upper_lid=0.44,
                  right_lower_lid=0.36, left_upper_lid=0.44, left_lower_lid=0.36)


@pytest.fixture(scope="module")
def loop() -> RoundTrip:
    with RoundTrip() as r:
        yield r


@pytest.fixture(scope="module")
def held_out(loop: RoundTrip) -> tuple[list[MaskParams], list[MaskParams | None]]:
    """Wanted and measured parameters over the human range, eyes open enough to see the iris."""
    ranges = {**HUMAN_RANGE, "aperture": (0.2, READABLE_APERTURE)}
    wanted = sample_human_range(HELD_OUT_POINTS, HELD_OUT_SEED, ranges)
    return wanted, [loop(p) for p in wanted]


# ---- the mapping itself ---------------------------------------------------------------


def test_polynomial_fit_recovers_a_known_function() -> None:
    """The fit finds a cubic in several inputs, ignores gross outliers, and holds its edge value plus the
    stated slope beyond the fitted box."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-10, 10, size=(400, 3))
    truth = 2.0 + 1.5 * x[:, 0] - 0.02 * x[:, 0] * x[:, 1] + 0.001 * x[:, 2] ** 3
    noisy = truth + rng.normal(0, 0.05, 400)
    noisy[:8] += 40.0  # tracker failures
    low, high = np.full(3, -10.0), np.full(3, 10.0)
    f = fit_polynomial(x, noisy, ("a", "b", "c"), 3, low, high, np.array([1.5, 0.0, 0.0]))
    probe = rng.uniform(-10, 10, size=(50, 3))
    expected = 2.0 + 1.5 * probe[:, 0] - 0.02 * probe[:, 0] * probe[:, 1] + 0.001 * probe[:, 2] ** 3
    assert np.abs(f(probe) - expected).max() < 0.1
    edge = f(np.array([10.0, 1.0, 1.0]))
    assert f(np.array([14.0, 1.0, 1.0])) == pytest.approx(edge + 1.5 * 4.0)
    assert len(monomial_powers(3, 3)) == math.comb(6, 3)


def test_calibration_saves_and_loads(tmp_path) -> None:
    shipped = load_calibration()
    path = tmp_path / "calibration.npz"
    shipped.save(path)
    again = Calibration.load(path)
    params = MaskParams(face=True, head_yaw=12, right_gaze_yaw=-20, left_gaze_pitch=9, right_aperture=0.4)
    assert again.drawn(params) == shipped.drawn(params)
    assert set(again.functions) == set(shipped.functions) and again.info == shipped.info


def test_shipped_calibration_covers_every_interaction() -> None:
    """Each eye's rotation depends on the head's pose, place and size and its own lids, the head's drawn pose
    on its place: the mapping is joint, not one slope per axis."""
    functions = load_calibration().functions
    for side in ("right", "left"):
        for key in ("gaze_yaw", "gaze_pitch"):
            assert {"gaze_yaw", "gaze_pitch", "aperture", "share", "head_yaw", "head_pitch", "head_scale", "head_x",
                    "head_y"} <= set(functions[f"{side}.{key}"].inputs)
        assert f"{side}.opening" not in functions  # the lids are drawn at their measured height
        assert int(functions[f"{side}.gaze_yaw"].powers.sum(1).max()) >= 2
    base = MaskParams(face=True, right_gaze_yaw=20.0, right_aperture=0.35)
    turned = dataclasses.replace(base, head_yaw=30.0)
    drawn = load_calibration().drawn
    assert drawn(base).right_gaze_yaw != pytest.approx(drawn(turned).right_gaze_yaw, abs=0.2)


def test_identity_draws_what_it_is_given() -> None:
    params = MaskParams(face=True, head_pitch=7, right_gaze_yaw=-12, left_gaze_pitch=5, right_aperture=0.4,
                        right_upper_lid=0.25, right_lower_lid=0.15)
    drawn = Calibration.identity().drawn(params)
    assert (drawn.head_pitch, drawn.right_gaze_yaw, drawn.left_gaze_pitch) == (7, -12, 5)
    assert drawn.right_upper_lid + drawn.right_lower_lid == pytest.approx(0.4)
    assert drawn.right_upper_lid == pytest.approx(0.25)


@pytest.mark.parametrize("pose", [dict(), dict(head_pitch=-12.0, head_y=0.58, right_gaze_pitch=10.0),
                                  dict(head_yaw=15.0, head_scale=0.3, right_gaze_yaw=-12.0)])
def test_lids_are_drawn_at_their_measured_height(pose: dict[str, float]) -> None:
    """The doctor looks at the picture, not at our tracker's reading of it: through the shipped calibration
    each lid is drawn at its measured absolute height, whatever the gaze and the head. (Calibrating the
    opening to our tracker's compressed reading of the avatar's lids drew an eye 0.2 eye widths open shut and
    one 0.4 open at 0.65; a cubic fit drew a normal eye, 0.32, at 0.16.)"""
    calibration = load_calibration()
    base = dataclasses.replace(MaskParams(face=True), **pose)
    for aperture in np.linspace(0.15, 0.6, 10):
        wanted = dataclasses.replace(base, right_aperture=aperture, right_upper_lid=0.62 * aperture,
                                     right_lower_lid=0.38 * aperture)
        drawn = calibration.drawn(wanted)
        assert drawn.right_upper_lid == pytest.approx(wanted.right_upper_lid, abs=1e-6)
        assert drawn.right_lower_lid == pytest.approx(wanted.right_lower_lid, abs=1e-6)


# ---- the closed loop on held-out points -------------------------------------------------
#
# Issue 15 asks for a median |track(render(p)) - p| of 0.5 deg gaze and 0.015 eye widths of aperture (95th
# percentile 1.5 deg and 0.04) and a vergence bias within 0.3 deg. The shipped calibration does not reach
# that (README, The avatar, says why); these tests hold it at what it reaches, with some room, so that a
# refit or a change to the drawing cannot make it worse unnoticed.


@pytest.fixture(scope="module")
def consult(loop: RoundTrip) -> tuple[list[MaskParams], list[MaskParams | None]]:
    """Wanted and measured parameters over a consult's usual range (head within 15 deg, gaze within 15)."""
    wanted = sample_human_range(HELD_OUT_POINTS, HELD_OUT_SEED, CONSULT_RANGE)
    return wanted, [loop(p) for p in wanted]


def test_held_out_round_trip_consult(consult: tuple[list[MaskParams], list[MaskParams | None]]) -> None:
    """Over a consult's usual range (measured 1.2 deg median gaze error, 3.6 at the 95th percentile, 0.04 eye
    widths of aperture (the lids are drawn uncalibrated), vergence bias -0.02 deg yaw and -0.03 pitch, head
    0.5 deg)."""
    figures = summary(round_trip_errors(*consult))
    assert figures["measured"] == 1.0
    assert figures["gaze_median"] <= 2.0, figures
    assert figures["gaze_p95"] <= 6.5, figures
    assert figures["aperture_median"] <= 0.05, figures
    assert abs(figures["vergence_yaw_bias"]) <= 1.0, figures
    assert abs(figures["vergence_pitch_bias"]) <= 1.0, figures
    assert figures["head_median"] <= 1.0, figures


def test_held_out_round_trip(held_out: tuple[list[MaskParams], list[MaskParams | None]]) -> None:
    """Over the whole range, head yaw +-40, pitch +-25, roll +-20 and both eyes' gaze and lids varying at
    once: 1.9-2.2 deg median gaze error, 5.4-6.2 at the 80th percentile, 10-12% of gaze readings off by more
    than 10 deg (where our tracker fails outright on the avatar: heads turned 30-45 deg), a median vergence
    error of 1.9-2.4 deg yaw, 0.045 eye widths of aperture and 0.5 deg of head.

    Those ranges are what moving every point's head by a pixel does (eight placements, an AVX2 machine). The
    95th percentile and the mean vergence error, which the failures' 20-40 deg make, moved more: 14.0-17.0 and
    3.3-4.2 deg, and a machine with other vector instructions rounds the picture differently (14.9 and 3.4
    there). So the tail is held by how often the reading fails, not by how far off its worst few are.
    """
    figures = summary(round_trip_errors(*held_out))
    assert figures["measured"] == 1.0
    assert figures["gaze_count"] >= 150, figures
    assert figures["gaze_median"] <= 3.0, figures
    assert figures["gaze_p80"] <= 7.5, figures
    assert figures["gaze_failed"] <= 0.15, figures
    assert abs(figures["vergence_yaw_median"]) <= 3.0, figures
    assert figures["aperture_median"] <= 0.05, figures
    assert figures["head_median"] <= 1.0, figures


def test_held_out_round_trip_across_head_poses(held_out: tuple[list[MaskParams], list[MaskParams | None]]) -> None:
    """Turned heads (beyond half of any of yaw 40, pitch 25, roll 20) keep to the whole range's levels."""
    wanted, measured = held_out
    errors = round_trip_errors(wanted, measured)
    turn = np.array([max(abs(p.head_yaw) / 40, abs(p.head_pitch) / 25, abs(p.head_roll) / 20) for p in wanted])
    for band in (turn < 0.5, turn >= 0.5):
        figures = summary({k: v[band] for k, v in errors.items()})
        assert figures["gaze_median"] <= 3.5, figures
        assert figures["aperture_median"] <= 0.06, figures
        assert figures["head_median"] <= 1.2, figures


# ---- the loop as a stream draws it: held postures, through the gaze trim ------------------
#
# A stream holds a posture for a moment; the gaze trim (proxy/avatar/trim.py) reads the avatar back meanwhile and
# takes out the error the calibration leaves there. Each held-out point is held TRIM_FRAMES frames (1 s at 30 fps)
# through a fresh trim, then read as above. Gaze only: the trim leaves the lids as measured.

TRIM_FRAMES, TRIM_POINTS = 30, 14


def held_through_the_trim(ranges: dict[str, tuple[float, float]]) -> tuple[list[MaskParams], list[MaskParams | None]]:
    wanted = sample_human_range(TRIM_POINTS, HELD_OUT_SEED, {**ranges, "aperture": (0.2, READABLE_APERTURE)})
    with RoundTrip(trim_frames=TRIM_FRAMES) as loop:
        return wanted, [loop(p) for p in wanted]


def test_held_out_round_trip_through_the_trim_consult() -> None:
    """Issue 15's gaze figures for the loop over a consult's usual range: median |error| <= 0.5 deg, 95th percentile
    <= 1.5 deg, vergence bias within 0.3 deg (the calibration alone: 1.2 / 3.6 deg, above)."""
    figures = summary(round_trip_errors(*held_through_the_trim(CONSULT_RANGE)))
    assert figures["measured"] == 1.0
    assert figures["gaze_median"] <= 0.5, figures
    assert figures["gaze_p95"] <= 1.5, figures
    assert abs(figures["vergence_yaw_bias"]) <= 0.3, figures
    assert abs(figures["vergence_pitch_bias"]) <= 0.3, figures


def test_held_out_round_trip_through_the_trim_across_head_poses() -> None:
    """Over the whole range the median gaze error is within 0.5 deg whether the head is turned or not. The tail
    is not: where our tracker fails outright on the avatar (10-30 deg off, at eyes turned 25-30 deg apart with the
    head rolled), the trim leaves the reading alone, as it must (README, The avatar)."""
    wanted, measured = held_through_the_trim(HUMAN_RANGE)
    errors = round_trip_errors(wanted, measured)
    turn = np.array([max(abs(p.head_yaw) / 40, abs(p.head_pitch) / 25, abs(p.head_roll) / 20) for p in wanted])
    for band in (turn < 0.5, turn >= 0.5):
        figures = summary({k: v[band] for k, v in errors.items()})
        assert figures["gaze_median"] <= 0.5, figures


# ---- wide-open lids ---------------------------------------------------------------------


def test_wide_open_lids_show_sclera_above_and_below_the_iris() -> None:
    """The mesh opens to 0.8 eye widths, and the picture shows white sclera between each lid and the iris."""
    mesh = AvatarMesh(load_template())
    positions, _ = mesh.deform(Calibration.identity().drawn(WIDE))
    measured = MaskParams(face=True)
    for side, contour in (("right", RIGHT_EYE_CONTOUR), ("left", LEFT_EYE_CONTOUR)):
        Retargeter._lids(measured, side, positions[list(contour)].astype(np.float64), np.zeros((5, 3)))
        assert getattr(measured, f"{side}_aperture") == pytest.approx(0.8, abs=0.01)
    with AvatarRenderer(640, 480, calibration=Calibration.identity(), supersample=4) as renderer:
        frame = renderer.render(WIDE).astype(int)
        tracker = FaceTracker(smoothing=False)
        track = tracker.process(frame.astype(np.uint8))
        assert track is not None
    for iris in (track.right_iris, track.left_iris):
        x, y = np.round(iris[0, :2]).astype(int)
        radius = float(np.linalg.norm(iris[1:, :2] - iris[0, :2], axis=1).mean())
        column = frame[:, x]
        # sclera: bright and grey (skin is reddish, the iris dark)
        white = (column.max(1) - column.min(1) < 20) & (column.sum(1) > 400)
        above = white[int(y - 2.0 * radius):int(y - 1.05 * radius)]
        below = white[int(y + 1.05 * radius):int(y + 2.0 * radius)]
        assert above.sum() >= 2 and below.sum() >= 2


def test_aperture_reads_back_up_to_the_trackers_ceiling(loop: RoundTrip) -> None:
    """A wider aperture reads back wider, up to the top of what the tracker reads at all, and an eye drawn
    0.7 eye widths open reads at that ceiling rather than narrower (issue 15 asks for 0.7 +- 0.04: our iris
    model reads no eye that wide, the avatar's or a person's)."""
    readings = []
    for aperture in (0.1, 0.25, 0.4, READABLE_APERTURE, 0.7):
        params = dataclasses.replace(WIDE, head_scale=0.22, right_aperture=aperture, left_aperture=aperture,
                                     right_upper_lid=0.6 * aperture, right_lower_lid=0.4 * aperture,
                                     left_upper_lid=0.6 * aperture, left_lower_lid=0.4 * aperture)
        measured = loop(params)
        assert measured is not None
        readings.append((measured.right_aperture + measured.left_aperture) / 2)
    assert readings == sorted(readings[:4]) + readings[4:], readings
    assert readings[3] == pytest.approx(READABLE_APERTURE, abs=0.04), readings
    assert readings[4] >= READABLE_APERTURE - 0.04, readings


def test_a_blink_drawn_reads_as_a_blink(loop: RoundTrip) -> None:
    """A narrowing fissure darkens as its lids and lashes close over it (``shaders/eye.frag``), so the tracker
    reads the avatar's narrow eye narrow: drawn 0.05 eye widths open it reads closed, and a fast blink whose
    deepest frame is 0.08 open (as 30 fps often samples one) counts once on each eye. Drawn as a bright slit,
    those frames read 0.17 and 0.21: the doctor saw the avatar blink and the blink count missed it."""
    def drawn(aperture: float) -> MaskParams:
        return dataclasses.replace(WIDE, head_scale=0.22, right_aperture=aperture, left_aperture=aperture,
                                   right_upper_lid=0.62 * aperture, right_lower_lid=0.38 * aperture,
                                   left_upper_lid=0.62 * aperture, left_lower_lid=0.38 * aperture)

    narrow = loop(drawn(0.05))
    assert narrow is not None
    assert narrow.right_aperture < CLOSED and narrow.left_aperture < CLOSED, narrow
    readings = [loop(drawn(aperture)) for aperture in [0.32] * 8 + [0.2, 0.08, 0.2] + [0.32] * 8]
    assert all(m is not None for m in readings)
    for side in ("right", "left"):
        assert count_blinks([getattr(m, f"{side}_aperture") for m in readings]) == 1, side


# ---- movement through the live tracker --------------------------------------------------


def nystagmus_ratio(head_yaw: float, right: float, left: float) -> tuple[float, float]:
    """Amplitude read back over amplitude drawn, per eye, of a 4 Hz 3 deg horizontal nystagmus of both eyes
    around (``right``, ``left``) deg, drawn at 30 fps and tracked with the tracker's normal smoothing."""
    fps, hz, amplitude, frames = 30.0, 4.0, 3.0, 60
    t = np.arange(frames) / fps
    wave = amplitude * np.sin(2 * math.pi * hz * t)
    tracker, retarget = FaceTracker(), Retargeter()
    readings = []
    with AvatarRenderer(640, 480) as renderer:
        for i, (time_s, offset) in enumerate(zip(t, wave, strict=True)):
            params = MaskParams(face=True, frame=i, t=float(time_s), head_yaw=head_yaw, right_gaze_yaw=right + offset,
                                left_gaze_yaw=left + offset, right_aperture=0.35, left_aperture=0.35)
            track = tracker.process(renderer.render(params), float(time_s))
            assert track is not None
            m = retarget(track, 640, 480, i, float(time_s))
            readings.append((m.right_gaze_yaw, m.left_gaze_yaw))
    settled = slice(10, None)  # the filter's first frames
    right_read, left_read = (sine_fit(t[settled], eye[settled], hz)[0] / amplitude
                             for eye in np.array(readings, dtype=float).T)
    return right_read, left_read


def test_nystagmus_survives_the_round_trip() -> None:
    """A 4 Hz, 3 deg nystagmus at 30 fps through the renderer and the live tracker (smoothing on) keeps its
    amplitude on average over eyes and gaze positions. Not at every one: the tracker's reading of the avatar
    changes slope from place to place (0.25-1.1 per degree), so one eye at one position can read it at a
    fraction of its size (see README, The avatar)."""
    ratios = [r for pose in ((8.0, 5.0, 2.0), (0.0, -10.0, -12.0), (-12.0, 12.0, 8.0), (15.0, 0.0, -5.0))
              for r in nystagmus_ratio(*pose)]
    # issue 15 asks for every one within 20%; measured: a mean of 1.06, single eyes 0.75-1.48
    assert 0.6 <= float(np.mean(ratios)) <= 1.4, ratios
    assert max(ratios) > 0.9, ratios

"""The blink rule: absolute for narrow eyes, relative to the open level for wide ones."""

from __future__ import annotations

import numpy as np

from proxy.tracking.blinks import count_blinks


def _trace(open_level: float, dips: list[float], noise: float = 0.01, seed: int = 0) -> tuple[list[float], list[float]]:
    """30 fps: an open eye with a 3-frame dip every second to each value in ``dips``."""
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for depth in dips:
        values += list(open_level + rng.normal(0, noise, 27))
        values += [open_level - (open_level - depth) * f for f in (0.5, 1.0, 0.5)]
    values += list(open_level + rng.normal(0, noise, 30))
    return values, [i / 30 for i in range(len(values))]


def test_full_blinks_count_for_any_eye() -> None:
    for level in (0.25, 0.35, 0.45):
        values, times = _trace(level, [0.04] * 5)
        assert count_blinks(values, times) == 5


def test_wide_eye_partial_blinks_count_but_noise_does_not() -> None:
    values, times = _trace(0.44, [0.2, 0.21, 0.19])
    assert count_blinks(values, times) == 3
    values, times = _trace(0.44, [], noise=0.03)
    assert count_blinks(values, times) == 0


def test_fast_blinks_read_half_shut_count() -> None:
    """A blink sampled once at 30 fps reads at about 0.55 of the open level; a glance down at 0.62 does not count."""
    values = list(0.47 + np.random.default_rng(0).normal(0, 0.01, 90))
    times = [i / 30 for i in range(90)]
    values[30], values[60] = 0.26, 0.29  # as d6's frames 50 and 313: a shut eye, then a downward glance
    assert count_blinks(values, times) == 1


def test_narrow_eye_needs_a_real_closure() -> None:
    # a narrow eye (0.24) whose lids twitch to 0.15: above the absolute 0.12, so not a blink
    values, times = _trace(0.24, [0.15, 0.16])
    assert count_blinks(values, times) == 0
    values, times = _trace(0.24, [0.05, 0.06])
    assert count_blinks(values, times) == 2


def test_no_face_samples_are_skipped() -> None:
    values, times = _trace(0.35, [0.04, 0.04])
    values[40:50] = [None] * 10
    assert count_blinks(values, times) == 2

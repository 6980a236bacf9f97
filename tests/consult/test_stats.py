"""The room state's rolling figures (proxy.consult.stats)."""

from __future__ import annotations

import pytest

from proxy.consult.stats import ByteRate


def test_byte_rate_counts_the_window_only() -> None:
    rate = ByteRate(window=5.0)
    for second in range(10):  # 10 s of a 1 Mbit/s camera: 125 kB a second, 4 frames a second
        for quarter in range(4):
            rate.record(125_000 // 4, now=100.0 + second + quarter / 4)
    assert rate.kbps(now=109.9) == pytest.approx(1000, rel=0.06)
    assert rate.total == 1_250_000
    assert rate.kbps(now=200.0) == 0.0  # nothing in the last 5 s: silent, not the old figure

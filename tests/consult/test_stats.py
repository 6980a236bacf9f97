"""The room state's rolling figures (proxy.consult.stats)."""

from __future__ import annotations

import pytest

from proxy.consult.config import Config
from proxy.consult.rooms import RoomRegistry
from proxy.consult.stats import LOW_CAMERA_KBPS, ByteRate


def test_byte_rate_counts_the_window_only() -> None:
    rate = ByteRate(window=5.0)
    for second in range(10):  # 10 s of a 1 Mbit/s camera: 125 kB a second, 4 frames a second
        for quarter in range(4):
            rate.record(125_000 // 4, now=100.0 + second + quarter / 4)
    assert rate.kbps(now=109.9) == pytest.approx(1000, rel=0.06)
    assert rate.total == 1_250_000
    assert rate.kbps(now=200.0) == 0.0  # nothing in the last 5 s: silent, not the old figure


async def test_metrics_count_the_consults_whose_camera_is_too_thin_to_track_well() -> None:
    """/metrics tells an operator how many consults have a camera below LOW_CAMERA_KBPS (none yet: not counted)."""
    registry = RoomRegistry(Config.load(environ={}))
    thin, good, silent = registry.create(), registry.create(), registry.create()
    try:
        for room, kbps in ((thin, 400), (good, 1500)):
            for _ in range(5):  # 5 s of camera, once a second
                room.camera_rate.record(kbps * 1000 // 8)
        registry.refresh_metrics()
        assert thin.state()["mask"]["camera_kbps"] < LOW_CAMERA_KBPS < good.state()["mask"]["camera_kbps"]
        assert silent.state()["mask"]["camera_kbps"] == 0
        assert b"maskproxy_low_bitrate_cameras 1.0" in registry.metrics.render()
    finally:
        await registry.close()

"""Per-consult figures for the room state, the doctor's page and the operator's log."""

from __future__ import annotations

import time
from collections import deque

import numpy as np

#: Below this (kbit/s) the patient camera's compression costs the eye signals noticeable accuracy (vergence off by
#: 0.8-1.1 deg at 600 kbit/s, 0.5-0.8 from 1.5 Mbit/s on normal faces: scripts/camera_bitrate.py). The doctor's
#: page marks it (web/js/doctor.js has the same figure) and /metrics counts such consults.
LOW_CAMERA_KBPS = 1000


class RollingStats:
    """Frame rate and latency over a sliding window (monotonic seconds)."""

    def __init__(self, window: float = 60.0, rate_window: float = 5.0) -> None:
        self.window = window
        self.rate_window = rate_window
        self._latencies: deque[tuple[float, float]] = deque()
        self._sent: deque[float] = deque()
        self.frames = 0

    def record(self, latency_ms: float | None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.frames += 1
        self._sent.append(now)
        if latency_ms is not None:
            self._latencies.append((now, latency_ms))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._latencies and self._latencies[0][0] < now - self.window:
            self._latencies.popleft()
        while self._sent and self._sent[0] < now - self.rate_window:
            self._sent.popleft()

    def fps(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._sent) < 2:
            return 0.0
        span = max(now - self._sent[0], 1e-3)
        return (len(self._sent) - 1) / span if now - self._sent[-1] < 1.0 else 0.0

    def latency(self) -> dict[str, float]:
        values = [v for _, v in self._latencies]
        if not values:
            return {"p50": 0.0, "p95": 0.0}
        return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}


class ByteRate:
    """Bits per second over the last ``window`` seconds (monotonic), from sizes recorded as they pass."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._sizes: deque[tuple[float, int]] = deque()
        self._bytes = 0  #: the sum of the sizes in the window
        self.total = 0  #: bytes recorded since the start

    def record(self, size: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._sizes.append((now, size))
        self._bytes += size
        self.total += size
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._sizes and self._sizes[0][0] < now - self.window:
            self._bytes -= self._sizes.popleft()[1]

    def kbps(self, now: float | None = None) -> float:
        """Kilobits per second over the window (0 when nothing came in it)."""
        now = time.monotonic() if now is None else now
        self._trim(now)
        return self._bytes * 8 / self.window / 1000

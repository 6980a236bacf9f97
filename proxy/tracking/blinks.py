"""Blink counting from one eye's aperture signal, shared by the audit, the tests and (in JavaScript,
web/js/traces.js) the doctor's page.

A blink is the eye closing and opening again, with hysteresis so that a noisy
half-closed eye does not count twice. "Closed" is relative to the eye's own
recent open level as well as absolute: an eye that is wide open (aperture
0.44) blinks through 0.25 at 30 frames a second more often than it is ever
sampled fully shut, while a narrow eye (0.25) must still go below 0.12.

* closed when the aperture falls below max(``CLOSED``, ``CLOSE_RATIO`` x level)
* open again (the blink is counted) above max(``OPEN``, ``OPEN_RATIO`` x level)

where level is the 90th percentile of the aperture over the last ``WINDOW_S``
seconds. The lids themselves are reported in absolute terms (MaskParams);
this rule only decides what counts as a blink.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np

#: Aperture (palpebral fissure height / eye width) below which an eye is always closed.
CLOSED = 0.12
#: Aperture above which a closed eye is always open again.
OPEN = 0.18
#: Relative thresholds, as fractions of the eye's recent open level. A fast blink is often
#: sampled only once or twice at 30 fps, and the eye model reads such a frame, shut on the
#: picture, at 0.54-0.58 of the open level (the shared clips d6 and tps_driving, checked frame by
#: frame); a downward glance or a squint narrows the eye to 0.6 of it or more.
CLOSE_RATIO = 0.55
OPEN_RATIO = 0.75
WINDOW_S = 2.0


class BlinkCounter:
    """Counts blinks of one eye, one aperture sample at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.is_closed = False
        self._history: deque[tuple[float, float]] = deque()
        self._samples = 0

    def level(self) -> float | None:
        """The eye's recent open level (None before a few samples)."""
        if len(self._history) < 6:
            return None
        return float(np.percentile([v for _, v in self._history], 90))

    def update(self, aperture: float | None, t: float | None = None) -> bool:
        """Feed one sample (None when no face) at time ``t`` (s; default: 30 fps); True when a blink ended."""
        self._samples += 1
        if aperture is None or aperture != aperture:  # None or NaN
            return False
        now = self._samples / 30.0 if t is None else t
        while self._history and self._history[0][0] < now - WINDOW_S:
            self._history.popleft()
        level = self.level()
        self._history.append((now, aperture))
        closed_below = max(CLOSED, CLOSE_RATIO * level) if level is not None else CLOSED
        open_above = max(OPEN, OPEN_RATIO * level) if level is not None else OPEN
        if not self.is_closed and aperture < closed_below:
            self.is_closed = True
        elif self.is_closed and aperture > open_above:
            self.is_closed = False
            self.count += 1
            return True
        return False


def count_blinks(apertures: Iterable[float | None], times: Iterable[float] | None = None) -> int:
    counter = BlinkCounter()
    if times is None:
        for value in apertures:
            counter.update(value)
    else:
        for value, t in zip(apertures, times, strict=True):
            counter.update(value, t)
    return counter.count

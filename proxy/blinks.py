"""Blink counting from the per-eye aperture signal, shared by the audit, tests and docs.

A blink is the aperture dipping below ``CLOSED`` and coming back above
``OPEN`` (hysteresis, so a noisy half-closed eye does not count twice).
The doctor's page (web/js/traces.js) uses the same thresholds.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Aperture (palpebral fissure height / eye width) below which the eye counts as closed.
CLOSED = 0.12
#: Aperture above which a closed eye counts as open again; the blink is counted then.
OPEN = 0.18


class BlinkCounter:
    """Counts blinks of one eye, one aperture sample at a time."""

    def __init__(self, closed: float = CLOSED, opened: float = OPEN) -> None:
        self.closed_below = closed
        self.open_above = opened
        self.count = 0
        self.is_closed = False

    def update(self, aperture: float | None) -> bool:
        """Feed one sample (None when no face); True when a blink has just ended."""
        if aperture is None:
            return False
        if not self.is_closed and aperture < self.closed_below:
            self.is_closed = True
        elif self.is_closed and aperture > self.open_above:
            self.is_closed = False
            self.count += 1
            return True
        return False


def count_blinks(apertures: Iterable[float | None]) -> int:
    counter = BlinkCounter()
    for value in apertures:
        counter.update(value)
    return counter.count

"""Timestamped parameter streams as arrays, with gaps as NaN.

The measures work on columns of numbers, not on MaskParams objects: time, face
present, the head's pose and size, and per eye gaze, aperture and MRD. A frame
without a face, or an eye the tracker could not measure (a field that is
``None``), is NaN in its columns: a gap, never a guessed value.
:class:`TraceBuffer` keeps the last minutes of a live stream in a fixed ring of
rows, so a consult's memory does not grow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from proxy.params import MaskParams

EYES = ("right", "left")
EYE_FIELDS = ("gaze_yaw", "gaze_pitch", "aperture", "mrd1", "mrd2")
HEAD_FIELDS = ("head_yaw", "head_pitch", "head_scale")
COLUMNS = ("t", "face", *HEAD_FIELDS, *(f"{eye}_{name}" for eye in EYES for name in EYE_FIELDS))
_INDEX = {name: i for i, name in enumerate(COLUMNS)}


def other(eye: str) -> str:
    return "left" if eye == "right" else "right"


def row(params: MaskParams) -> np.ndarray:
    """One frame as a row of :data:`COLUMNS`; NaN where there is no face or a field is None or not finite."""
    out = np.full(len(COLUMNS), np.nan)
    out[0] = float(params.t)
    out[1] = 1.0 if params.face else 0.0
    if params.face:
        for i, name in enumerate(COLUMNS[2:], start=2):
            value = getattr(params, name, None)
            if isinstance(value, int | float) and math.isfinite(value):
                out[i] = float(value)
    return out


@dataclass(frozen=True)
class Traces:
    """Columns of :data:`COLUMNS` over time (rows in time order).

    ``calibrated`` names the eyes whose gaze columns are in degrees of visual angle (after
    :meth:`proxy.exam.calibration.Calibration.apply`); other eyes' gaze is the tracker's angle.
    """

    rows: np.ndarray
    calibrated: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_params(cls, params: Iterable[MaskParams]) -> Traces:
        rows = [row(p) for p in params]
        return cls(np.array(rows) if rows else np.empty((0, len(COLUMNS))))

    @classmethod
    def from_arrays(cls, t: np.ndarray, **columns: np.ndarray | float) -> Traces:
        """Traces from arrays (or constants) by column name; unnamed columns are NaN, ``face`` defaults to 1."""
        t = np.asarray(t, dtype=float)
        rows = np.full((t.size, len(COLUMNS)), np.nan)
        rows[:, 0] = t
        rows[:, 1] = 1.0
        for name, values in columns.items():
            if name not in _INDEX:
                raise KeyError(f"unknown column {name!r}")
            rows[:, _INDEX[name]] = np.broadcast_to(np.asarray(values, dtype=float), t.shape)
        return cls(rows)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.rows[:, _INDEX[name]]

    @property
    def t(self) -> np.ndarray:
        return self.rows[:, 0]

    def eye(self, eye: str, name: str) -> np.ndarray:
        return self[f"{eye}_{name}"]

    def gaze(self, eye: str) -> np.ndarray:
        """(n, 2) yaw and pitch of one eye, degrees; NaN where not measured."""
        return self.rows[:, [_INDEX[f"{eye}_gaze_yaw"], _INDEX[f"{eye}_gaze_pitch"]]]

    def with_gaze(self, eye: str, gaze: np.ndarray, calibrated: bool) -> Traces:
        """A copy with one eye's gaze replaced (and marked calibrated or not)."""
        rows = self.rows.copy()
        rows[:, _INDEX[f"{eye}_gaze_yaw"]] = gaze[:, 0]
        rows[:, _INDEX[f"{eye}_gaze_pitch"]] = gaze[:, 1]
        eyes = self.calibrated | {eye} if calibrated else self.calibrated - {eye}
        return replace(self, rows=rows, calibrated=frozenset(eyes))

    def between(self, start: float, end: float) -> Traces:
        """Rows with start <= t < end."""
        t = self.t
        return replace(self, rows=self.rows[(t >= start) & (t < end)])

    def last(self, seconds: float) -> Traces:
        """Rows of the last ``seconds`` before (and including) the newest one."""
        if not len(self):
            return self
        return replace(self, rows=self.rows[self.t > self.t[-1] - seconds])

    def frame_interval(self) -> float:
        """Median time between rows (s); 1/30 when there are too few."""
        if len(self) < 3:
            return 1 / 30
        steps = np.diff(self.t)
        steps = steps[steps > 0]
        return float(np.median(steps)) if steps.size else 1 / 30

    def span(self) -> float:
        return float(self.t[-1] - self.t[0]) if len(self) > 1 else 0.0


class TraceBuffer:
    """The last rows of a live stream in a fixed ring (``capacity`` rows); the oldest are overwritten."""

    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self._rows = np.full((capacity, len(COLUMNS)), np.nan)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, params: MaskParams) -> None:
        self._rows[self._next] = row(params)
        self._next = (self._next + 1) % len(self._rows)
        self._count = min(self._count + 1, len(self._rows))

    def clear(self) -> None:
        self._rows[:] = np.nan
        self._next = self._count = 0

    def traces(self, seconds: float | None = None, fps: float = 60.0) -> Traces:
        """The buffered rows in time order: all, or those of the last ``seconds`` (at up to ``fps``)."""
        count = self._count if seconds is None else min(self._count, int(math.ceil(seconds * fps)) + 2)
        order = (self._next - count + np.arange(count)) % len(self._rows)
        traces = Traces(self._rows[order])
        return traces if seconds is None else traces.last(seconds)

    def since(self, start: float) -> Traces:
        """Rows at or after time ``start``."""
        traces = self.traces()
        return replace(traces, rows=traces.rows[traces.t >= start])

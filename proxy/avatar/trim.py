"""The avatar's gaze trimmed while it is drawn, so that a tracker reads back what was measured.

The calibration (:mod:`.calibration`) is fitted once, over the whole human range, with low-order
polynomials. At any one posture it can be a few degrees off, and the two eyes' errors differ: at
the postures the shared clips' patients hold, the avatar reads back with 1-4 deg of false
vergence (``scripts/calibration_check.py``), which a doctor would take for a squint.

:class:`GazeTrim` closes the loop on the stream itself. It tracks the avatar just drawn (never
the patient's picture) with a tracker of its own, compares each eye's gaze read there with the
gaze that was wanted, and integrates the difference, per eye and axis, into an offset that is
taken off the gaze asked of the calibration for the next frames. The offset moves slowly (about
:data:`TIME_CONSTANT_S`), so fast eye movements (saccades, nystagmus) still pass straight through
the calibration; only the error the calibration leaves at the posture being held is taken away.

The offset is a function of the parameters alone (what was wanted and what the avatar drawn from
them reads as), so the picture stays a function of the mask parameters and carries nothing of the
patient's face. It changes only what is drawn: the parameters that leave the proxy as data are
the ones measured on the patient.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from proxy.avatar.response import HUMAN_RANGE
from proxy.avatar.retarget import Retargeter
from proxy.params import MaskParams
from proxy.tracking.tracker import FaceTracker

#: How long the offset takes to take out most (1 - 1/e) of a steady error, in seconds of stream.
TIME_CONSTANT_S = 0.4
#: The most one reading may move the offset: a larger difference is the tracker failing on a frame
#: (a reading several degrees off for one frame), not an error of the calibration.
MAX_ERROR_DEG = 8.0
#: The largest offset: beyond it the calibration is not what is wrong (a reading the tracker cannot make).
MAX_OFFSET_DEG = 6.0
#: The eye must be at least this open (eye widths), wanted and read, for its gaze to count (as in the fit).
MIN_APERTURE = 0.2
#: Gaze keys of each eye, (yaw, pitch).
AXES = ("yaw", "pitch")


class GazeTrim:
    """Per-eye gaze offsets of one stream's avatar; ``reset()`` between streams, ``close()`` when done.

    ``every`` says how often the avatar is read back: every frame in files, less often live, where
    each reading costs a tracking pass. ``eye_samples`` should be the stream tracker's own, so the
    avatar is read as the patient was.
    """

    def __init__(self, every: int = 1, eye_samples: int = 1, threads: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        self.every = every
        self.tracker = FaceTracker(threads=threads, smoothing=False, eye_samples=eye_samples)
        self.retarget = Retargeter()
        self.offsets: dict[str, float] = {}
        self._count = 0
        self._last_t: float | None = None

    def reset(self) -> None:
        """Forget the offsets (a new stream, or the face lost)."""
        self.offsets.clear()
        self.tracker.reset()
        self.retarget.reset()
        self._count = 0
        self._last_t = None

    def apply(self, params: MaskParams) -> MaskParams:
        """``params`` with each eye's gaze less its offset: what to ask of the calibration."""
        if not self.offsets:
            return params
        changes = {}
        for name, offset in self.offsets.items():
            value = getattr(params, name)
            if value is not None:
                changes[name] = float(value) - offset
        return dataclasses.replace(params, **changes)

    def due(self) -> bool:
        """Whether the frame about to be drawn should be read back (:meth:`observe`)."""
        return self._count % self.every == 0

    def observe(self, wanted: MaskParams, picture: np.ndarray) -> None:
        """Read the avatar drawn for ``wanted`` (RGB or RGBA) and move the offsets towards what it missed.

        ``wanted`` is the frame's parameters as measured: an eye that was not measured (None), or
        not open enough to have a gaze, leaves its offsets as they are.
        """
        due, self._count = self.due(), self._count + 1
        if not wanted.face:
            if self.offsets:
                self.reset()
            return
        if not due:
            return
        dt = self.every / 30.0 if self._last_t is None else max(wanted.t - self._last_t, 1e-3)
        self._last_t = wanted.t
        height, width = picture.shape[:2]
        rgb = np.ascontiguousarray(picture[..., :3])
        read = self.retarget(self.tracker.process(rgb), width, height)
        if not read.face:
            return
        gain = 1.0 - math.exp(-min(dt, 1.0) / TIME_CONSTANT_S)
        for side in ("right", "left"):
            if not _open(wanted, side) or not _open(read, side) or not _readable(wanted, side):
                continue
            for axis in AXES:
                name = f"{side}_gaze_{axis}"
                want, got = getattr(wanted, name), getattr(read, name)
                if want is None or got is None or abs(got - want) > MAX_ERROR_DEG:
                    continue
                offset = self.offsets.get(name, 0.0) + gain * (got - want)
                self.offsets[name] = float(np.clip(offset, -MAX_OFFSET_DEG, MAX_OFFSET_DEG))

    def close(self) -> None:
        self.offsets.clear()


def _open(params: MaskParams, side: str) -> bool:
    aperture = getattr(params, f"{side}_aperture")
    return aperture is not None and aperture >= MIN_APERTURE


def _readable(params: MaskParams, side: str) -> bool:
    """Whether the eye's direction from the camera lies where the calibration was fitted: beyond it the
    tracker's reading no longer follows the drawn eye one to one, and an offset would only wind up."""
    for axis, head in (("yaw", params.head_yaw), ("pitch", params.head_pitch)):
        low, high = HUMAN_RANGE[f"camera_{axis}"]
        if not low <= head + float(getattr(params, f"{side}_gaze_{axis}") or 0.0) <= high:
            return False
    return True

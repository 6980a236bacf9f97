"""The avatar's gaze trimmed while it is drawn, so that a tracker reads back what was measured.

The calibration (:mod:`.calibration`) is fitted once, over the whole human range, with low-order
polynomials. At any one posture it can be a few degrees off, and the two eyes' errors differ: at
the postures the shared clips' patients hold, the avatar reads back with 1-4 deg of false
vergence (``scripts/calibration_check.py``), which a doctor would take for a squint.

:class:`GazeTrim` closes the loop on the stream itself. It tracks the avatar just drawn (never
the patient's picture) with a tracker of its own, compares each eye's gaze read there with the
gaze that was wanted, and integrates the difference, per eye and axis, into an offset that is
taken off the gaze asked of the calibration for the next frames. The calibration's error has a
part common to every gaze at the head's pose and distance, and a part that changes with the gaze
(by a few degrees between gazes 10 deg apart, which also makes the loop's slope wrong there): each
eye's offset is a common part plus a coarse grid over its wanted gaze (:data:`GRID_STEP_DEG`),
learnt together (normalised least mean squares), so an eye that moves between two places keeps
what was learnt at each. The offset at a gaze moves slowly (about :data:`TIME_CONSTANT_S`), so
fast eye movements (saccades, nystagmus) still pass through the calibration; only the error it
leaves at the postures being held is taken away, and what is no longer visited fades back
(:data:`FORGET_S`).

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

#: How long the offset at a gaze takes to take out most (1 - 1/e) of a steady error there, in seconds of stream.
TIME_CONSTANT_S = 0.4
#: ... and averages at least this many readings: one reading of the avatar's gaze has about 0.7 deg of noise, which
#: a stream read back only a few times a second (live) would otherwise draw as a twitch at each reading.
MIN_READINGS = 6
#: How long a learnt offset lasts where the eye no longer goes (s): it fades back to the calibration alone, as the
#: head's pose and distance it was learnt at change.
FORGET_S = 20.0
#: The most one reading may move the offset: a larger difference is the tracker failing on a frame
#: (a reading several degrees off for one frame), not an error of the calibration.
MAX_ERROR_DEG = 8.0
#: The largest offset: beyond it the calibration is not what is wrong (a reading the tracker cannot make).
MAX_OFFSET_DEG = 6.0
#: The eye must be at least this open (eye widths), wanted and read, for its gaze to count (as in the fit).
MIN_APERTURE = 0.2
#: The offsets are kept on a grid over each eye's wanted gaze, (yaw, pitch) in degrees: the calibration's error
#: changes with the gaze (by a few degrees between gazes 10 deg apart), so an eye that moves between two
#: places keeps what was learnt at each. Between nodes the offset is interpolated.
GRID_STEP_DEG = 5.0
GRID_YAW = (-40.0, 40.0)
GRID_PITCH = (-30.0, 30.0)
GRID_SHAPE = (round((GRID_YAW[1] - GRID_YAW[0]) / GRID_STEP_DEG) + 1,
              round((GRID_PITCH[1] - GRID_PITCH[0]) / GRID_STEP_DEG) + 1)
#: Gaze keys of each eye, (yaw, pitch).
AXES = ("yaw", "pitch")
SIDES = ("right", "left")


def _nodes(yaw: float, pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The four grid nodes around a gaze (yaw index, pitch index) and their bilinear weights."""
    u = (min(max(yaw, GRID_YAW[0]), GRID_YAW[1]) - GRID_YAW[0]) / GRID_STEP_DEG
    v = (min(max(pitch, GRID_PITCH[0]), GRID_PITCH[1]) - GRID_PITCH[0]) / GRID_STEP_DEG
    i, j = min(int(u), GRID_SHAPE[0] - 2), min(int(v), GRID_SHAPE[1] - 2)
    fu, fv = u - i, v - j
    rows = np.array([i, i + 1, i, i + 1])
    cols = np.array([j, j, j + 1, j + 1])
    weights = np.array([(1 - fu) * (1 - fv), fu * (1 - fv), (1 - fu) * fv, fu * fv])
    return rows, cols, weights


class GazeTrim:
    """Per-eye gaze offsets of one stream's avatar; ``reset()`` between streams, ``close()`` when done.

    ``every`` says how often the avatar is read back: every frame in files, less often live, where
    each reading costs a tracking pass. ``eye_samples`` should be the stream tracker's own, so the
    avatar is read as the patient was; ``models_of`` is that tracker, whose models the trim's shares
    (the same thread uses both).
    """

    def __init__(self, every: int = 1, eye_samples: int = 1, threads: int = 1,
                 models_of: FaceTracker | None = None) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        self.every = every
        self.tracker = FaceTracker(threads=threads, smoothing=False, eye_samples=eye_samples, models_of=models_of)
        self.retarget = Retargeter()
        #: Per eye, the (yaw, pitch) offset common to every gaze (degrees) ...
        self.biases = {side: np.zeros(2) for side in SIDES}
        #: ... and, on a grid of (yaw nodes, pitch nodes, 2), what each wanted gaze adds to it.
        self.grids = {side: np.zeros((*GRID_SHAPE, 2)) for side in SIDES}
        self._count = 0
        self._last_t: float | None = None
        #: Per eye, readings taken into its offsets since the stream began (see :meth:`observe`).
        self._readings = {side: 0 for side in SIDES}

    def reset(self) -> None:
        """Forget the offsets (a new stream, or the face lost)."""
        for side in SIDES:
            self.biases[side][:] = 0.0
            self.grids[side][:] = 0.0
        self.tracker.reset()
        self.retarget.reset()
        self._count = 0
        self._last_t = None
        self._readings = {side: 0 for side in SIDES}

    def offset(self, params: MaskParams, side: str) -> tuple[float, float]:
        """The (yaw, pitch) offset of one eye at its gaze in ``params`` (0 for an eye without a gaze)."""
        yaw, pitch = getattr(params, f"{side}_gaze_yaw"), getattr(params, f"{side}_gaze_pitch")
        if yaw is None or pitch is None:
            return 0.0, 0.0
        rows, cols, weights = _nodes(float(yaw), float(pitch))
        value = np.clip(self.biases[side] + weights @ self.grids[side][rows, cols], -MAX_OFFSET_DEG, MAX_OFFSET_DEG)
        return float(value[0]), float(value[1])

    def apply(self, params: MaskParams) -> MaskParams:
        """``params`` with each eye's gaze less its offset there: what to ask of the calibration."""
        if not params.face:
            return params
        changes = {}
        for side in SIDES:
            offsets = self.offset(params, side)
            for axis, offset in zip(AXES, offsets, strict=True):
                value = getattr(params, f"{side}_gaze_{axis}")
                if value is not None and offset:
                    changes[f"{side}_gaze_{axis}"] = float(value) - offset
        return dataclasses.replace(params, **changes) if changes else params

    def due(self) -> bool:
        """Whether the frame about to be drawn should be read back (:meth:`observe`)."""
        return self._count % self.every == 0

    def observe(self, wanted: MaskParams, picture: np.ndarray) -> None:
        """Read the avatar drawn for ``wanted`` (RGB or RGBA) and move the offsets at its gaze towards what it
        missed.

        ``wanted`` is the frame's parameters as measured: an eye that was not measured (None), or
        not open enough to have a gaze, leaves its offsets as they are.
        """
        due, self._count = self.due(), self._count + 1
        if not wanted.face:
            if self._last_t is not None:
                self.reset()
            return
        if not due:
            return
        dt = self.every / 30.0 if self._last_t is None else min(max(wanted.t - self._last_t, 1e-3), 1.0)
        self._last_t = wanted.t
        height, width = picture.shape[:2]
        read = self.retarget(self.tracker.process(picture), width, height)  # the tracker takes RGBA as it is
        gain = 1.0 - math.exp(-min(dt / TIME_CONSTANT_S, 1.0 / MIN_READINGS))
        keep = math.exp(-dt / FORGET_S)
        for side in SIDES:
            grid, bias = self.grids[side], self.biases[side]
            grid *= keep
            bias *= keep
            if not (read.face and _open(wanted, side) and _open(read, side) and _readable(wanted, side)):
                continue
            errors = []
            for axis in AXES:
                want, got = getattr(wanted, f"{side}_gaze_{axis}"), getattr(read, f"{side}_gaze_{axis}")
                errors.append(math.nan if want is None or got is None else float(got) - float(want))
            if not all(abs(e) <= MAX_ERROR_DEG for e in errors):  # NaN fails too
                continue
            # move the offset at this gaze by gain * error, shared between the common offset and the four grid
            # nodes around the gaze in proportion to their weights (normalised LMS)
            rows, cols, weights = _nodes(float(getattr(wanted, f"{side}_gaze_yaw")),
                                         float(getattr(wanted, f"{side}_gaze_pitch")))
            # The offsets start at zero, so an average with a fixed gain would start biased towards zero and take
            # a few time constants to reach the error (a whole second or more at the live read rate): its first
            # readings are averaged plainly instead (the n-th moves the offset by 1/n of its error) until the
            # fixed gain is the larger.
            self._readings[side] += 1
            share = max(gain, 1.0 / self._readings[side]) / (1.0 + float(weights @ weights))
            bias[:] = np.clip(bias + share * np.asarray(errors), -MAX_OFFSET_DEG, MAX_OFFSET_DEG)
            grid[rows, cols] = np.clip(grid[rows, cols] + share * np.outer(weights, errors),
                                       -MAX_OFFSET_DEG, MAX_OFFSET_DEG)

    def close(self) -> None:
        self.reset()


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

"""Mask parameters: the only description of the patient's face that reaches the avatar.

One :class:`MaskParams` per video frame. It carries movements and posture,
never identity: no face shape or proportions, no skin colour or texture and
nothing from outside the face. Angles are degrees; lengths are in eye widths
(the distance between the two corners of the same eye), so a parameter means
the same for every face and every camera distance; MRD values are in
millimetres on the scale of a population-mean iris (11.7 mm across).

Conventions: "right" is the patient's own right (the image's left in an
unmirrored camera picture). Yaw is positive towards the image's right, pitch
positive upwards, roll positive when the head tilts towards the patient's
right shoulder (counter-clockwise on screen). Gaze angles are the rotation of
each eye's line of sight (its visual axis: the pupillary axis turned 5 degrees
nasally, the population-mean angle kappa) relative to the head, each eye on
its own, measured with a perspective camera model: an eye that fixates the
camera turns towards it, so two straight eyes fixating a camera 50 cm away
read R - L of about +7 degrees (+4 at 1 m). Strabismus is a change of the
difference between the two; without a calibration of the patient's own eyes
the absolute difference is uncertain by several degrees per person.

Per-eye fields can be ``None`` (JSON ``null``): gaze and MRD when that eye
is closed or its iris is not seen reliably, and all of that eye's fields
when the eye itself cannot be measured (turned away, covered, out of the
picture, too small). ``<eye>_state`` says which
(:mod:`proxy.tracking.confidence`). A value is never guessed.

The JSON form (``to_json``) is what ``maskproxy track`` prints, what
``--params-out`` writes and what the doctor's ``mask`` data channel carries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


def _f(doc: str, unit: str, neutral: float = 0.0) -> Any:
    return field(default=neutral, metadata={"doc": doc, "unit": unit})


def _eye(doc: str, unit: str, neutral: float = 0.0) -> Any:
    """A per-eye measurement: a number, or None where that eye could not be measured."""
    return field(default=neutral, metadata={"doc": doc, "unit": unit, "nullable": True})


#: ``<eye>_state`` values: the eye was measured, or why (part of) it was not.
EYE_STATES = ("measured", "closed", "no iris", "turned away", "out of frame", "too small", "covered", "unsure")
#: States in which an eye's lids are measured but not its iris (gaze and MRD are None).
LIDS_ONLY = ("closed", "no iris", "unsure")


@dataclass
class MaskParams:
    """Per-frame avatar parameters (see the module docstring for conventions)."""

    frame: int = field(default=0, metadata={"doc": "frame index in the stream", "unit": ""})
    t: float = field(default=0.0, metadata={"doc": "frame time from the stream start", "unit": "s"})
    face: bool = field(default=False, metadata={"doc": "a face was tracked in this frame", "unit": ""})

    # Head posture
    head_yaw: float = _f("head rotation about the vertical axis, + towards the image's right", "deg")
    head_pitch: float = _f("head rotation about the horizontal axis, + chin up", "deg")
    head_roll: float = _f("head tilt in the image plane, + towards the patient's right shoulder", "deg")
    head_x: float = _f("horizontal position of the face centre, 0 = left edge, 1 = right edge", "frame width", 0.5)
    head_y: float = _f("vertical position of the face centre, 0 = top edge, 1 = bottom edge", "frame height", 0.45)
    head_scale: float = _f("distance between the outer eye corners over the frame height", "frame height", 0.22)

    # Eyes: each eye on its own, never averaged; None where that eye could not be measured
    right_state: str = field(default="measured", metadata={
        "doc": "right eye: measured, closed (gaze null) or why it is not measurable (all its fields null)", "unit": ""})
    left_state: str = field(default="measured", metadata={"doc": "left eye: as right_state", "unit": ""})
    right_gaze_yaw: float | None = _eye("right eye's line of sight relative to the head, + towards the image's right",
                                        "deg")
    right_gaze_pitch: float | None = _eye("right eye's line of sight relative to the head, + up", "deg")
    left_gaze_yaw: float | None = _eye("left eye's line of sight relative to the head, + towards the image's right",
                                       "deg")
    left_gaze_pitch: float | None = _eye("left eye's line of sight relative to the head, + up", "deg")
    right_aperture: float | None = _eye("right palpebral fissure height over eye width (absolute)", "eye widths", 0.32)
    left_aperture: float | None = _eye("left palpebral fissure height over eye width (absolute)", "eye widths", 0.32)
    right_upper_lid: float | None = _eye("right upper lid margin above the corner line (absolute)", "eye widths", 0.2)
    right_lower_lid: float | None = _eye("right lower lid margin below the corner line (absolute)", "eye widths", 0.12)
    left_upper_lid: float | None = _eye("left upper lid margin above the corner line (absolute)", "eye widths", 0.2)
    left_lower_lid: float | None = _eye("left lower lid margin below the corner line (absolute)", "eye widths", 0.12)
    right_mrd1: float | None = _eye("right upper lid margin to iris centre (MRD1; < 2 mm suggests ptosis)", "mm", 4.0)
    right_mrd2: float | None = _eye("right iris centre to lower lid margin (MRD2)", "mm", 5.0)
    left_mrd1: float | None = _eye("left upper lid margin to iris centre (MRD1)", "mm", 4.0)
    left_mrd2: float | None = _eye("left iris centre to lower lid margin (MRD2)", "mm", 5.0)

    # Expressions: movements relative to the patient's own running neutral, never their shape
    right_brow: float = _f("right brow raise relative to the patient's running neutral", "eye widths")
    left_brow: float = _f("left brow raise relative to the patient's running neutral", "eye widths")
    mouth_open: float = _f("inner lip gap over mouth width above the patient's resting level (0 = at rest)",
                            "mouth widths")
    mouth_smile: float = _f("mouth width change relative to the running neutral", "eye widths")

    def to_json(self, digits: int = 3) -> dict[str, Any]:
        """JSON-ready dict; head and eye fields are present only when ``face`` is true, None is null."""
        data = asdict(self)
        if not self.face:
            return {"frame": self.frame, "t": round(self.t, 4), "face": False}
        out: dict[str, Any] = {}
        for key, value in data.items():
            out[key] = round(value, digits) if isinstance(value, float) and key != "t" else value
        out["t"] = round(self.t, 4)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MaskParams:
        """Inverse of :meth:`to_json`; unknown keys are ignored, missing ones are neutral."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        params = cls(**values)
        params.check()
        return params

    def check(self) -> None:
        """Raise ValueError on non-finite numbers, a None where a number is required, or an unknown eye state."""
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                if not f.metadata.get("nullable"):
                    raise ValueError(f"{f.name} cannot be null")
            elif isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} is not finite")
        for name in ("right_state", "left_state"):
            if getattr(self, name) not in EYE_STATES:
                raise ValueError(f"{name} must be one of {', '.join(EYE_STATES)}")

    def measured(self) -> MaskParams:
        """These parameters with None in every field that its eye's ``<eye>_state`` says was not measured."""
        nulls: dict[str, None] = {}
        for side in ("right", "left"):
            state = getattr(self, f"{side}_state")
            if state != "measured":
                lids_only = (*gaze_fields(side), f"{side}_mrd1", f"{side}_mrd2")
                nulls.update(dict.fromkeys(lids_only if state in LIDS_ONLY else eye_fields(side)))
        return replace(self, **nulls) if nulls else self

    @classmethod
    def neutral(cls, frame: int = 0, t: float = 0.0) -> MaskParams:
        """The neutral avatar: looking at the camera, eyes open, centred."""
        return cls(frame=frame, t=t, face=False)


def describe() -> list[tuple[str, str, str]]:
    """(name, unit, meaning) of every field, for documentation and ``--help``."""
    return [(f.name, f.metadata.get("unit", ""), f.metadata.get("doc", "")) for f in fields(MaskParams)]


def eye_fields(side: str) -> tuple[str, ...]:
    """Names of one eye's fields that can be None (JSON null); ``side`` is "right" or "left"."""
    return tuple(f.name for f in fields(MaskParams) if f.metadata.get("nullable") and f.name.startswith(f"{side}_"))


def gaze_fields(side: str) -> tuple[str, str]:
    """One eye's gaze fields (yaw, pitch): None also while that eye is closed."""
    return f"{side}_gaze_yaw", f"{side}_gaze_pitch"

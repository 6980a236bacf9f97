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
right shoulder (counter-clockwise on screen). Gaze angles are eyeball
rotations relative to the head, each eye on its own: strabismus is the
difference between the two.

The JSON form (``to_json``) is what ``maskproxy track`` prints, what
``--params-out`` writes and what the doctor's ``mask`` data channel carries.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _f(doc: str, unit: str, neutral: float = 0.0) -> Any:
    return field(default=neutral, metadata={"doc": doc, "unit": unit})


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

    # Eyes: each eye on its own, never averaged
    right_gaze_yaw: float = _f("right eyeball rotation relative to the head, + towards the image's right", "deg")
    right_gaze_pitch: float = _f("right eyeball rotation relative to the head, + up", "deg")
    left_gaze_yaw: float = _f("left eyeball rotation relative to the head, + towards the image's right", "deg")
    left_gaze_pitch: float = _f("left eyeball rotation relative to the head, + up", "deg")
    right_aperture: float = _f("right palpebral fissure height over eye width (absolute)", "eye widths", 0.32)
    left_aperture: float = _f("left palpebral fissure height over eye width (absolute)", "eye widths", 0.32)
    right_upper_lid: float = _f("right upper lid margin above the corner line (absolute)", "eye widths", 0.2)
    right_lower_lid: float = _f("right lower lid margin below the corner line (absolute)", "eye widths", 0.12)
    left_upper_lid: float = _f("left upper lid margin above the corner line (absolute)", "eye widths", 0.2)
    left_lower_lid: float = _f("left lower lid margin below the corner line (absolute)", "eye widths", 0.12)
    right_mrd1: float = _f("right upper lid margin to iris centre (MRD1; < 2 mm suggests ptosis)", "mm", 4.0)
    right_mrd2: float = _f("right iris centre to lower lid margin (MRD2)", "mm", 5.0)
    left_mrd1: float = _f("left upper lid margin to iris centre (MRD1)", "mm", 4.0)
    left_mrd2: float = _f("left iris centre to lower lid margin (MRD2)", "mm", 5.0)

    # Expressions: movements relative to the patient's own running neutral, never their shape
    right_brow: float = _f("right brow raise relative to the patient's running neutral", "eye widths")
    left_brow: float = _f("left brow raise relative to the patient's running neutral", "eye widths")
    mouth_open: float = _f("inner lip gap over mouth width above the patient's resting level (0 = at rest)",
                            "mouth widths")
    mouth_smile: float = _f("mouth width change relative to the running neutral", "eye widths")

    def to_json(self, digits: int = 3) -> dict[str, Any]:
        """JSON-ready dict; head and eye fields are present only when ``face`` is true."""
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
        """Raise ValueError on non-finite numbers (they would corrupt a render)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} is not finite")

    @classmethod
    def neutral(cls, frame: int = 0, t: float = 0.0) -> MaskParams:
        """The neutral avatar: looking at the camera, eyes open, centred."""
        return cls(frame=frame, t=t, face=False)


def describe() -> list[tuple[str, str, str]]:
    """(name, unit, meaning) of every field, for documentation and ``--help``."""
    return [(f.name, f.metadata.get("unit", ""), f.metadata.get("doc", "")) for f in fields(MaskParams)]

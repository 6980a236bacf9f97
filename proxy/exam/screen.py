"""The patient's screen and viewing distance: degrees of visual angle to places on the screen and back.

Sizes on the screen are in CSS pixels, what the patient's page measures. Their
physical size comes from a ruler the patient matches to a credit card
(ISO/IEC 7810 ID-1, 85.60 mm wide) or from the typed screen diagonal; without
either, the CSS reference pixel (1/96 inch) is assumed, which on real screens
can be 20-40% off.

The viewing distance is typed by the patient or estimated from the face's size
in the camera picture, with a pinhole camera of an assumed field of view::

    focal length (px)   f = (diagonal of the frame in px / 2) / tan(FOV_diagonal / 2)
    outer canthi (px)   w = head_scale x frame height
    distance (mm)       D = f x OUTER_CANTHAL_MM / w
                          = OUTER_CANTHAL_MM x sqrt(1 + aspect^2) / (2 tan(FOV_diagonal / 2) x head_scale)

with the adult mean outer-canthal (exocanthion) distance of 90 mm and a webcam's
typical 70 degree diagonal field of view. Both vary (canthal distance by about
+-6 mm between adults, webcams from 55 to 90 degrees), so the distance is good to
about 25%; a typed distance is better. An iris of 11.7 mm gives the same formula
with its diameter in place of the canthal distance (:func:`distance_from_size`).

A target at angles (yaw, pitch) is drawn at::

    x = width / 2 - D_px x tan(yaw),   y = height / 2 - D_px x tan(pitch)      (CSS px, y down)

where D_px is the viewing distance in CSS px. Angles follow MaskParams' gaze
convention: yaw is positive towards the camera picture's right, which is the
patient's left and so the left side of the screen as the patient faces it; pitch
is positive upwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Width of a credit card (ISO/IEC 7810 ID-1), mm.
CARD_WIDTH_MM = 85.60
#: The CSS reference pixel: 96 per inch. Assumed only when the patient gave no ruler and no diagonal.
CSS_PX_PER_MM = 96 / 25.4
#: Adult mean distance between the outer eye corners (exocanthion to exocanthion), mm.
OUTER_CANTHAL_MM = 90.0
#: Population-mean horizontal visible iris diameter, mm (the same scale as MaskParams' MRD values).
IRIS_DIAMETER_MM = 11.7
#: A webcam's typical diagonal field of view, degrees.
CAMERA_DIAGONAL_FOV_DEG = 70.0
#: Viewing distance assumed when neither a typed distance nor a face is available, mm.
DEFAULT_DISTANCE_MM = 600.0
#: Targets stay within this fraction of the screen's half-width and half-height.
SCREEN_MARGIN = 0.9


def px_per_mm_from_card(card_css_px: float) -> float:
    """CSS px per mm from an on-screen ruler the patient stretched to a credit card's width."""
    if not card_css_px > 0:
        raise ValueError("the card ruler must be a positive width")
    return card_css_px / CARD_WIDTH_MM


def px_per_mm_from_diagonal(width_css_px: float, height_css_px: float, diagonal_in: float) -> float:
    """CSS px per mm from the screen's size in CSS px and its typed diagonal in inches."""
    if not (width_css_px > 0 and height_css_px > 0 and diagonal_in > 0):
        raise ValueError("screen size and diagonal must be positive")
    return math.hypot(width_css_px, height_css_px) / (diagonal_in * 25.4)


def distance_from_size(size_frame_heights: float, size_mm: float, aspect: float = 4 / 3,
                       fov_deg: float = CAMERA_DIAGONAL_FOV_DEG) -> float:
    """Distance (mm) of an object ``size_mm`` across that spans ``size_frame_heights`` of the picture's height."""
    if not size_frame_heights > 0:
        raise ValueError("the face size must be positive")
    return size_mm * math.hypot(1.0, aspect) / (2 * math.tan(math.radians(fov_deg) / 2) * size_frame_heights)


def distance_from_face(head_scale: float, aspect: float = 4 / 3, fov_deg: float = CAMERA_DIAGONAL_FOV_DEG) -> float:
    """Viewing distance (mm) from MaskParams' ``head_scale`` (outer canthi over frame height); see the module."""
    return distance_from_size(head_scale, OUTER_CANTHAL_MM, aspect, fov_deg)


@dataclass(frozen=True)
class Screen:
    """The patient's screen (CSS px), its scale and the viewing distance, with where each came from."""

    width_px: float
    height_px: float
    px_per_mm: float
    distance_mm: float
    #: How the scale was found: "card", "diagonal" or "assumed" (the CSS reference pixel).
    scale_source: str = "assumed"
    #: How the distance was found: "typed", "face" or "assumed".
    distance_source: str = "assumed"

    @property
    def distance_px(self) -> float:
        """Viewing distance in CSS px."""
        return self.distance_mm * self.px_per_mm

    @property
    def measured(self) -> bool:
        """Both the scale and the distance come from the patient rather than from assumptions."""
        return self.scale_source != "assumed" and self.distance_source != "assumed"

    def to_screen(self, yaw: np.ndarray | float, pitch: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Target angles (deg) to screen-normalized coordinates (0..1 across, 0..1 down)."""
        x = 0.5 - self.distance_px * np.tan(np.radians(yaw)) / self.width_px
        y = 0.5 - self.distance_px * np.tan(np.radians(pitch)) / self.height_px
        return x, y

    def to_degrees(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Screen-normalized coordinates back to target angles (deg)."""
        yaw = np.degrees(np.arctan((0.5 - np.asarray(x)) * self.width_px / self.distance_px))
        pitch = np.degrees(np.arctan((0.5 - np.asarray(y)) * self.height_px / self.distance_px))
        return yaw, pitch

    def max_angles(self) -> tuple[float, float]:
        """Largest |yaw| and |pitch| (deg) that keep a target within the screen's margin."""
        yaw = math.degrees(math.atan(SCREEN_MARGIN * self.width_px / 2 / self.distance_px))
        pitch = math.degrees(math.atan(SCREEN_MARGIN * self.height_px / 2 / self.distance_px))
        return yaw, pitch

    def to_json(self) -> dict[str, float | str]:
        return {"width_css_px": round(self.width_px, 1), "height_css_px": round(self.height_px, 1),
                "px_per_mm": round(self.px_per_mm, 3), "distance_mm": round(self.distance_mm, 1),
                "scale_source": self.scale_source, "distance_source": self.distance_source}

    @classmethod
    def from_report(cls, width_px: float, height_px: float, *, card_css_px: float | None = None,
                    diagonal_in: float | None = None, distance_mm: float | None = None,
                    head_scale: float | None = None, aspect: float = 4 / 3) -> Screen:
        """The best geometry from what the patient's page reported and the face's size.

        Scale: the card ruler, else the typed diagonal, else the CSS reference pixel. Distance: typed, else
        from ``head_scale``, else :data:`DEFAULT_DISTANCE_MM`.
        """
        if card_css_px is not None:
            scale, scale_source = px_per_mm_from_card(card_css_px), "card"
        elif diagonal_in is not None:
            scale, scale_source = px_per_mm_from_diagonal(width_px, height_px, diagonal_in), "diagonal"
        else:
            scale, scale_source = CSS_PX_PER_MM, "assumed"
        if distance_mm is not None:
            distance, distance_source = distance_mm, "typed"
        elif head_scale is not None and math.isfinite(head_scale) and head_scale > 0:
            distance, distance_source = distance_from_face(head_scale, aspect), "face"
        else:
            distance, distance_source = DEFAULT_DISTANCE_MM, "assumed"
        return cls(width_px, height_px, scale, distance, scale_source, distance_source)


#: A 13-inch laptop screen at the CSS reference scale, 60 cm away: what tests and a patient who reported
#: nothing get.
DEFAULT_SCREEN = Screen(1280.0, 800.0, CSS_PX_PER_MM, DEFAULT_DISTANCE_MM)

"""Per-eye confidence: say that an eye could not be measured instead of reporting a wrong value.

The eye model always answers, with an open eye and an iris somewhere, even
for a hand or a patch over the eye, an eye seen edge-on or a face a few
pixels wide. What it answered is checked against geometry and against the
pixels under it (:class:`~proxy.tracking.tracker.EyeQuality`), and the first
check that fails names the eye's state (:data:`proxy.params.EYE_STATES`):

* ``out of frame``: part of the eye's region is outside the picture.
* ``too small``: the eye is narrower than :data:`MIN_EYE_PX` pixels: the
  iris is then a few pixels across and the gaze error grows quickly.
* ``turned away``: the head is turned more than :data:`MAX_AWAY_DEG` from
  this eye's side: the nose hides it and the model sees it edge-on.
* ``covered``: the pixels around the lids hardly vary (:data:`MIN_TEXTURE`),
  or vary little (:data:`LOW_TEXTURE`) and show no iris where the model put
  one (:data:`LOW_TEXTURE_CONTRAST`) while the lids read open: a hand or a
  patch, where the model still draws an open eye.
* ``unsure``: the model's iris is not an iris: a diameter far from the 0.4
  eye widths of real eyes, the eye crops disagreeing on its centre (files
  average several), or a gaze beyond the range of human eye rotation.
* ``closed``: the aperture is below :data:`GAZE_MIN_APERTURE`: the lids are
  measured, the iris (gaze, MRD) is not.
* ``no iris``: the lids read open but the pixels show no darker iris inside
  a lighter fissure where the model put it (:data:`MIN_IRIS_CONTRAST`): a
  half-closed eye in a blink, an eye in deep shadow. Like ``closed``, the
  lids are measured and the iris is not.

``closed``, ``no iris`` and ``unsure`` concern the iris: they null an eye's
gaze and MRD and keep its lids (a blink's half-shut frames still count).
Every other state but ``measured`` nulls all of that eye's fields.

Every threshold is a property of the models and of eyes, checked on the
shared clips (see the README's "When an eye cannot be measured"), not tuned per clip.
"""

from __future__ import annotations

from proxy.tracking.tracker import EyeQuality

#: Less of the eye's region than this inside the picture: out of frame.
MIN_IN_FRAME = 0.9
#: Eyes narrower than this (corner to corner, picture pixels) are too small to measure: the iris
#: (0.42 eye widths) is then under 4 pixels across. On d9 and d10 shrunk to 8 px eyes the gaze error
#: against the full-size reading reaches 3.5-12.6 deg (90th percentile), at 11 px 1.5-6.4, at 14 px 1.3-3.7.
MIN_EYE_PX = 10.0
#: Head yaw away from an eye's side beyond which that eye is turned away (degrees): on the template
#: head the side of the nose starts to hide the far eye's inner corner here (its bridge from 39).
MAX_AWAY_DEG = 32.0
#: Below this luminance variation around the lids (SD over mean) there is no eye to see: an eye,
#: open or closed, has lashes and lid margins (0.13 at the least on the shared clips, behind glasses).
MIN_TEXTURE = 0.1
#: Below this variation an open-looking eye also needs an iris at least this contrasted (skin with
#: some texture, a hand, reads 0.02-0.14 here; a real open eye this plain still shows its iris).
LOW_TEXTURE, LOW_TEXTURE_CONTRAST = 0.15, 0.05
#: An iris that is not darker than the fissure around it (contrast at or below this) is not seen.
MIN_IRIS_CONTRAST = 0.0
#: Apertures below this show too little of the iris for gaze (eye widths): closed.
GAZE_MIN_APERTURE = 0.15
#: The iris diameter of a real eye over its width lies well inside this range.
IRIS_RATIO_RANGE = (0.25, 0.75)
#: Eye crops whose iris centres disagree by more than this (RMS, eye widths) mean the model guesses
#: (files average four crops; on the shared clips 99% of eyes agree within 0.02-0.04).
MAX_SPREAD = 0.04
#: Eye rotation beyond the human range (abduction/adduction about 50 degrees, elevation 45,
#: depression 55) is a wrong reading, not an eye movement.
MAX_GAZE_YAW, MAX_GAZE_PITCH = 60.0, 60.0


def eye_state(quality: EyeQuality | None, away_deg: float, aperture: float,
              gaze: tuple[float, float]) -> str:
    """The eye's state: ``measured``, ``closed`` (no gaze) or why it could not be measured.

    ``away_deg`` is the head's yaw away from this eye's side, ``aperture`` and ``gaze`` are what
    the retargeter read for it. Without a ``quality`` (a track built by hand) only the geometry of
    the head and of the reading is checked.
    """
    if quality is not None:
        if quality.in_frame < MIN_IN_FRAME:
            return "out of frame"
        if quality.width_px < MIN_EYE_PX:
            return "too small"
    if away_deg > MAX_AWAY_DEG:
        return "turned away"
    if quality is not None and quality.texture < MIN_TEXTURE:
        return "covered"
    if aperture < GAZE_MIN_APERTURE:
        return "closed"
    if quality is not None and quality.texture < LOW_TEXTURE and quality.iris_contrast < LOW_TEXTURE_CONTRAST:
        return "covered"
    if quality is not None:
        low, high = IRIS_RATIO_RANGE
        if not low <= quality.iris_ratio <= high or (quality.spread is not None and quality.spread > MAX_SPREAD):
            return "unsure"
    if abs(gaze[0]) > MAX_GAZE_YAW or abs(gaze[1]) > MAX_GAZE_PITCH:
        return "unsure"
    if quality is not None and quality.iris_contrast <= MIN_IRIS_CONTRAST:
        return "no iris"
    return "measured"

"""Retargeting: tracked landmarks (the patient's geometry) to mask parameters (movements only).

* Head pose: a rigid similarity fit of the template head's stable vertices
  (forehead, nose, cheekbones) to the 3D mesh, not 2D heuristics.
* Gaze, per eye: the iris centre is a point on a sphere around the template's
  eyeball centre (which the fit places in the image); its offset gives the
  eyeball's rotation, then the head's rotation is taken out.
* Lids, per eye: the eye model's lid contour, in the head's own frame,
  measured from the line through the eye's corners and divided by the
  eye's width. Absolute: a drooping lid stays a drooping lid.
* Expressions (brows, smile): deltas from the patient's own slowly updated
  neutral, so their face's proportions never reach the avatar.
* Mouth opening: the lip gap above the patient's own resting level (the
  lowest recent gap), so a mouth that rests open or a habitual open smile in
  every photo is drawn closed, and speech still opens it.
"""

from __future__ import annotations

import math

import numpy as np

from proxy.avatar.template import Template, load_template
from proxy.params import MaskParams
from proxy.tracking.tracker import FaceTrack

#: Mean horizontal visible iris diameter of adults (mm): the ruler for MRD values.
IRIS_DIAMETER_MM = 11.7
#: Time constant of the running expression neutral (s).
NEUTRAL_TIME_CONSTANT_S = 20.0
#: Eye-model contour indices: corners, and (upper, lower) lid points facing each other.
CORNER_OUTER, CORNER_INNER = 0, 8
LID_PAIRS = ((10, 2), (11, 3), (12, 4), (13, 5), (14, 6))
#: Below this aperture the iris is mostly hidden: the eye's last gaze is held (as during a blink).
GAZE_HOLD_APERTURE = 0.15
MOUTH_CORNERS = (61, 291)
INNER_LIPS = (13, 14)


def to_camera(points: np.ndarray) -> np.ndarray:
    """Image pixels (x right, y down, z away) to a right-handed frame with y up, z to the camera."""
    return points * np.array([1.0, -1.0, -1.0])


def fit_similarity(model: np.ndarray, observed: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation R and translation t with observed ~ s R model + t (least squares)."""
    mu_m, mu_o = model.mean(0), observed.mean(0)
    m, o = model - mu_m, observed - mu_o
    u, d, vt = np.linalg.svd(o.T @ m)
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ fix @ vt
    scale = float((d * np.diag(fix)).sum() / (m**2).sum())
    return scale, rotation, mu_o - scale * rotation @ mu_m


def euler_degrees(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees for R = Rz(roll) Ry(yaw) Rx(-pitch), signs as in params."""
    # With y up and z towards the camera, a positive rotation about y turns the nose to the
    # image's right, about z tilts the head counter-clockwise on screen (towards the patient's
    # right shoulder), and about x lowers the chin: pitch is its negative.
    yaw = math.asin(max(-1.0, min(1.0, -rotation[2, 0])))
    chin_down = math.atan2(rotation[2, 1], rotation[2, 2])
    roll = math.atan2(rotation[1, 0], rotation[0, 0])
    return math.degrees(yaw), -math.degrees(chin_down), math.degrees(roll)


class Retargeter:
    """Turns one stream's :class:`FaceTrack` results into :class:`MaskParams`.

    Holds the running expression neutral, so use one per stream and
    ``reset()`` it when the stream restarts.
    """

    def __init__(self, template: Template | None = None) -> None:
        self.template = template or load_template()
        self._rigid_model = self.template.vertices[self.template.rigid].astype(np.float64)
        vertices = self.template.vertices.astype(np.float64)
        corner_mid = np.stack([vertices[[33, 133]].mean(0), vertices[[263, 362]].mean(0)])
        self._eye_offsets = self.template.eye_centres.astype(np.float64) - corner_mid
        self._neutral: dict[str, float] = {}
        self._mouth_rest: float | None = None
        self._last_t: float | None = None
        self._gaze: dict[str, tuple[float, float]] = {}

    def reset(self) -> None:
        self._neutral.clear()
        self._mouth_rest = None
        self._gaze.clear()
        self._last_t = None

    def __call__(self, track: FaceTrack | None, width: int, height: int, frame: int = 0,
                 t: float = 0.0) -> MaskParams:
        if track is None:
            return MaskParams.neutral(frame, t)
        mesh = to_camera(track.landmarks.astype(np.float64))
        scale, rotation, translation = fit_similarity(self._rigid_model, mesh[self.template.rigid])

        def head_frame(points: np.ndarray) -> np.ndarray:
            """Camera-frame points into the template's frame (cm)."""
            return (points - translation) @ rotation / scale

        yaw, pitch, roll = euler_degrees(rotation)
        params = MaskParams(frame=frame, t=t, face=True, head_yaw=yaw, head_pitch=pitch, head_roll=roll)
        params.head_x = float(translation[0] / width)
        params.head_y = float(-translation[1] / height)
        corners = self.template.vertices[[33, 263]]
        params.head_scale = float(scale * np.linalg.norm(corners[1] - corners[0]) / height)

        for side, index, contour, iris in (("right", 0, track.right_eye, track.right_iris),
                                           ("left", 1, track.left_eye, track.left_iris)):
            # The eyeball sits behind this eye's own corners (observed, so the template's
            # proportions cannot bias it) at the template's offset, turned with the head.
            corners_cam = to_camera(contour[[CORNER_OUTER, CORNER_INNER]].astype(np.float64))
            centre = corners_cam.mean(0) + scale * rotation @ self._eye_offsets[index]
            iris_cam = to_camera(iris.astype(np.float64))
            offset = (iris_cam[0, :2] - centre[:2]) / (scale * self.template.eye_radius)
            norm = float(np.hypot(*offset))
            if norm > 0.98:
                offset *= 0.98 / norm
            direction = np.array([offset[0], offset[1], math.sqrt(1.0 - float(offset @ offset))])
            gaze = rotation.T @ direction
            yaw_pitch = (math.degrees(math.atan2(gaze[0], gaze[2])),
                         math.degrees(math.atan2(gaze[1], math.hypot(gaze[0], gaze[2]))))
            self._lids(params, side, head_frame(to_camera(contour[:16].astype(np.float64))),
                       head_frame(iris_cam))
            # A (nearly) closed eye shows no iris: keep its last gaze rather than guess.
            if getattr(params, f"{side}_aperture") < GAZE_HOLD_APERTURE and side in self._gaze:
                yaw_pitch = self._gaze[side]
            self._gaze[side] = yaw_pitch
            setattr(params, f"{side}_gaze_yaw", yaw_pitch[0])
            setattr(params, f"{side}_gaze_pitch", yaw_pitch[1])
        self._expressions(params, head_frame(mesh), t)
        return params

    @staticmethod
    def _lids(params: MaskParams, side: str, contour: np.ndarray, iris: np.ndarray) -> None:
        a, b = contour[CORNER_OUTER, :2], contour[CORNER_INNER, :2]
        axis = b - a
        width = float(np.hypot(*axis))
        if width < 1e-6:
            return
        axis /= width
        normal = np.array([-axis[1], axis[0]])
        if normal[1] < 0:
            normal = -normal  # "up" in the head frame

        def height(p: np.ndarray) -> float:
            return float((p[:2] - a) @ normal)

        uppers = [height(contour[u]) for u, _ in LID_PAIRS]
        lowers = [height(contour[lo]) for _, lo in LID_PAIRS]
        aperture = max(max(u - lo for u, lo in zip(uppers, lowers, strict=True)), 0.0) / width
        setattr(params, f"{side}_aperture", aperture)
        setattr(params, f"{side}_upper_lid", max(uppers) / width)
        setattr(params, f"{side}_lower_lid", -min(lowers) / width)
        rim = iris[1:5, :2]
        diameter = float((np.linalg.norm(rim[0] - rim[2]) + np.linalg.norm(rim[1] - rim[3])) / 2)
        if diameter > 1e-6:
            mm = IRIS_DIAMETER_MM / diameter
            centre = height(iris[0])
            setattr(params, f"{side}_mrd1", (uppers[2] - centre) * mm)
            setattr(params, f"{side}_mrd2", (centre - lowers[2]) * mm)

    def _expressions(self, params: MaskParams, mesh: np.ndarray, t: float) -> None:
        template = self.template
        eye_width = float(np.linalg.norm(template.vertices[33] - template.vertices[133]))
        corner_height = (mesh[33, 1] + mesh[263, 1]) / 2
        raw = {
            "right_brow": (mesh[template.right_brow, 1].mean() - corner_height) / eye_width,
            "left_brow": (mesh[template.left_brow, 1].mean() - corner_height) / eye_width,
            "mouth_smile": np.linalg.norm(mesh[MOUTH_CORNERS[0]] - mesh[MOUTH_CORNERS[1]]) / eye_width,
        }
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        weight = 1.0 - math.exp(-dt / NEUTRAL_TIME_CONSTANT_S)
        for key, value in raw.items():
            neutral = self._neutral.setdefault(key, float(value))
            neutral += weight * (float(value) - neutral)
            self._neutral[key] = neutral
            setattr(params, key, float(value) - neutral)
        mouth_width = float(np.linalg.norm(mesh[MOUTH_CORNERS[0]] - mesh[MOUTH_CORNERS[1]]))
        gap = float(np.linalg.norm(mesh[INNER_LIPS[0]] - mesh[INNER_LIPS[1]]))
        opening = gap / mouth_width if mouth_width > 1e-6 else 0.0
        # The resting level drops at once to a smaller gap and rises only slowly, so it
        # settles on the patient's closed (or resting) mouth, not on their speech.
        rest = opening if self._mouth_rest is None else min(opening, self._mouth_rest)
        rest += weight * (opening - rest)
        self._mouth_rest = rest
        params.mouth_open = max(0.0, opening - rest)

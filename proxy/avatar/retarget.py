"""Retargeting: tracked landmarks (the patient's geometry) to mask parameters (movements only).

* Head pose: a rigid similarity fit of the template head's stable vertices
  (forehead, nose, cheekbones) to the 3D mesh, not 2D heuristics.
* Gaze, per eye, with a perspective camera (:mod:`.camera`): the eyeball's
  centre lies behind this eye's own corners at the template's offset, turned
  with the head; the iris centre is where the ray through its pixel meets
  the eyeball's sphere. That direction (the pupillary axis) turned by the
  population-mean angle kappa (:data:`KAPPA_DEG`, nasal) is the line of
  sight; the head's rotation is taken out. An eye fixating the camera is
  turned towards it: two straight eyes read R - L = +7 degrees at 50 cm.
* Per eye, whether it could be measured (:mod:`proxy.tracking.confidence`):
  where not, that eye's fields are None; a closed eye keeps its lids and
  loses its gaze. Nothing is held or guessed here (see :mod:`.hold`).
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

from proxy.avatar.camera import Camera, towards
from proxy.avatar.template import Template, load_template
from proxy.params import MaskParams
from proxy.tracking.confidence import eye_state
from proxy.tracking.tracker import FaceTrack

#: Mean horizontal visible iris diameter of adults (mm): the ruler for MRD values.
IRIS_DIAMETER_MM = 11.7
#: Time constant of the running expression neutral (s).
NEUTRAL_TIME_CONSTANT_S = 20.0
#: Eye-model contour indices: corners, and (upper, lower) lid points facing each other.
CORNER_OUTER, CORNER_INNER = 0, 8
LID_PAIRS = ((10, 2), (11, 3), (12, 4), (13, 5), (14, 6))
#: Angle kappa between the pupillary axis and the line of sight (degrees, nasal; population mean,
#: Le Grand and El Hage 1980). The iris centre of an eye fixating a target lies that much temporal.
KAPPA_DEG = 5.0
#: Mesh corners (outer, inner) of each eye, [right, left].
EYE_CORNERS = ((33, 133), (263, 362))
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
        self._corners = np.stack([vertices[list(corners)] for corners in EYE_CORNERS])  # (eye, outer/inner, xyz)
        self._eye_offsets = self.template.eye_centres.astype(np.float64) - self._corners.mean(1)
        self._neutral: dict[str, float] = {}
        self._mouth_rest: float | None = None
        self._last_t: float | None = None

    def reset(self) -> None:
        self._neutral.clear()
        self._mouth_rest = None
        self._last_t = None

    def __call__(self, track: FaceTrack | None, width: int, height: int, frame: int = 0,
                 t: float = 0.0) -> MaskParams:
        """The frame's parameters; the fields of an eye that could not be measured are None."""
        return self.read(track, width, height, frame, t).measured()

    def read(self, track: FaceTrack | None, width: int, height: int, frame: int = 0, t: float = 0.0) -> MaskParams:
        """Every value as read, with each eye's state but nothing set to None.

        For judging the confidence itself (what would an unmeasured eye have shown?); anything that
        leaves the proxy goes through :meth:`__call__`.
        """
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

        # The eyes need the head's pose in the camera's frame, in perspective: refined from the
        # weak-perspective fit (the pose reported above, the head as the picture shows it).
        camera = Camera.nominal(width, height)
        guess = camera.place(float(translation[0]), float(-translation[1]), scale)
        rotation_cam, head = camera.solve_pose(self._rigid_model, track.landmarks[self.template.rigid, :2],
                                               towards(-guess) @ rotation, guess)

        for side, index, contour, iris, quality in (
                ("right", 0, track.right_eye, track.right_iris, track.right_quality),
                ("left", 1, track.left_eye, track.left_iris, track.left_quality)):
            self._lids(params, side, head_frame(to_camera(contour[:16].astype(np.float64))),
                       head_frame(to_camera(iris.astype(np.float64))))
            gaze = self._gaze(camera, head, rotation_cam, index, contour, iris)
            setattr(params, f"{side}_gaze_yaw", gaze[0])
            setattr(params, f"{side}_gaze_pitch", gaze[1])
            # the patient's right eye is the far one when the head turns to the image's left
            away = -yaw if side == "right" else yaw
            setattr(params, f"{side}_state", eye_state(quality, away, getattr(params, f"{side}_aperture"), gaze))
        self._expressions(params, head_frame(mesh), t)
        return params

    def _gaze(self, camera: Camera, head: np.ndarray, rotation: np.ndarray, index: int, contour: np.ndarray,
              iris: np.ndarray) -> tuple[float, float]:
        """(yaw, pitch) of one eye's line of sight relative to the head, degrees.

        ``head`` is the template origin and ``rotation`` the head's rotation, both in the camera's frame.
        """
        # The eyeball sits behind this eye's own corners (observed, so the template's proportions
        # cannot bias it) at the template's offset, turned with the head. Each corner is seen at its
        # own depth (the outer one lies about 6 mm deeper).
        corners = [camera.point(float(u), float(v), head[2] + float((rotation @ self._corners[index, k])[2]))
                   for k, (u, v) in enumerate(contour[[CORNER_OUTER, CORNER_INNER], :2].astype(np.float64))]
        centre = (corners[0] + corners[1]) / 2 + rotation @ self._eye_offsets[index]
        ray = camera.ray(float(iris[0, 0]), float(iris[0, 1]))
        # the nearer point where the ray meets the eyeball's sphere (or, if it passes beside the
        # sphere, the sphere's point nearest the ray: the iris seen edge-on)
        along = float(ray @ centre)
        reach = along * along - float(centre @ centre) + self.template.eye_radius**2
        iris_point = (along - math.sqrt(reach) if reach > 0 else along) * ray
        axis = rotation.T @ (iris_point - centre)
        yaw = math.degrees(math.atan2(axis[0], axis[2]))
        pitch = math.degrees(math.atan2(axis[1], math.hypot(axis[0], axis[2])))
        # the line of sight is kappa nasal of the pupillary axis: + for the right eye, - for the left
        return yaw + (KAPPA_DEG if index == 0 else -KAPPA_DEG), pitch

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

"""The nominal camera: reading a perspective picture without knowing the camera.

A webcam or a phone's front camera is a pinhole camera, and the proxy is
never told its focal length. It assumes a nominal diagonal field of view
(:data:`NOMINAL_DIAGONAL_FOV_DEG`; laptop webcams have 65-78 degrees, phone
front cameras 70-80) with the principal point at the picture's centre, and
takes the face's distance from its size in pixels (the template head is
population-mean sized). That is what the eyes need: each eye sees the camera
from its own direction, so an eye that fixates the camera is turned towards
it, and the eyeball's centre, which lies behind the lid corners, appears
shifted towards the picture's centre. At 50 cm both effects are a few
degrees, the size of the vergence a doctor looks for.

The head's pose in this camera (:meth:`Camera.solve_pose`) is a perspective
fit of the template's rigid points; the pose the parameters report stays the
weak-perspective one, the head as it looks in the picture, which is what the
avatar draws.

Frame: x to the picture's right, y up, z towards the viewer (the template's
axes); the camera sits at the origin and looks along -z, so every point in
front of it has z < 0. Lengths are template centimetres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Assumed diagonal field of view of an unknown camera (degrees).
NOMINAL_DIAGONAL_FOV_DEG = 70.0
#: OpenCV's camera frame (x right, y down, z forward) from ours, and back.
_FLIP = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in picture pixels (pixel centres at integers)."""

    focal: float  #: focal length (pixels)
    cx: float  #: principal point (pixels)
    cy: float

    @classmethod
    def nominal(cls, width: int, height: int) -> Camera:
        """The assumed camera of a ``width`` x ``height`` picture."""
        half_diagonal = math.hypot(width, height) / 2
        focal = half_diagonal / math.tan(math.radians(NOMINAL_DIAGONAL_FOV_DEG) / 2)
        return cls(focal, (width - 1) / 2, (height - 1) / 2)

    def ray(self, u: float, v: float) -> np.ndarray:
        """Unit direction from the camera through pixel (u, v)."""
        direction = np.array([(u - self.cx) / self.focal, -(v - self.cy) / self.focal, -1.0])
        return direction / np.linalg.norm(direction)

    def point(self, u: float, v: float, z: float) -> np.ndarray:
        """The point at depth ``z`` (< 0) that pixel (u, v) shows."""
        return np.array([(u - self.cx) * -z / self.focal, -(v - self.cy) * -z / self.focal, z])

    def place(self, u: float, v: float, pixels_per_cm: float) -> np.ndarray:
        """Where an object is whose reference point shows at pixel (u, v) at ``pixels_per_cm``.

        Weak perspective: the object's scale in the picture gives its distance.
        """
        return self.point(u, v, -self.focal / pixels_per_cm)

    def matrix(self) -> np.ndarray:
        """The 3x3 intrinsic matrix (OpenCV's convention)."""
        return np.array([[self.focal, 0.0, self.cx], [0.0, self.focal, self.cy], [0.0, 0.0, 1.0]])

    def solve_pose(self, model: np.ndarray, pixels: np.ndarray, rotation: np.ndarray,
                   position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotation and position of a rigid ``model`` (N x 3, cm) that shows at ``pixels`` (N x 2).

        Refined from a guess (``rotation``, ``position``); the guess is returned where the fit fails
        or puts the model behind the camera.
        """
        rvec, _ = cv2.Rodrigues(_FLIP @ rotation)
        tvec = (_FLIP @ position).reshape(3, 1)
        ok, rvec, tvec = cv2.solvePnP(np.ascontiguousarray(model, np.float64),
                                      np.ascontiguousarray(pixels, np.float64), self.matrix(), None, rvec, tvec,
                                      True, cv2.SOLVEPNP_ITERATIVE)
        if not ok or not np.isfinite(tvec).all() or tvec[2, 0] <= 0:
            return rotation, position
        fitted, _ = cv2.Rodrigues(rvec)
        return _FLIP @ fitted, _FLIP @ tvec.ravel()


def towards(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation that turns +z onto ``direction``.

    A weak-perspective fit measures a pose as seen along the line of sight to the
    object: this rotation takes that frame to the camera's.
    """
    d = direction / np.linalg.norm(direction)
    axis = np.array([-d[1], d[0], 0.0])  # z x d
    s, c = float(np.linalg.norm(axis)), float(d[2])
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * cross + (1.0 - c) * cross @ cross

"""The template head: one population-mean face shared by every patient.

Built by ``models/make_template.py`` (see its docstring) and stored in
``models/template_face.npz``. Units are centimetres; axes x to the image's
right, y up, z towards the camera; the outer eye corners are 9 cm apart.
The tracker's head pose is a rigid fit to this head, and the renderer draws
it, so "looking straight ahead" means the same to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from proxy.resources import model_path

#: Mesh vertices that move little with expressions: used for the rigid head-pose fit.
_EXPRESSIVE_BELOW_NOSE_CM = -1.0


@dataclass(frozen=True)
class Template:
    vertices: np.ndarray  #: (468, 3) float32, cm
    triangles: np.ndarray  #: (T, 3) int32, counter-clockwise seen from outside
    mirror: np.ndarray  #: (468,) index of each vertex's left-right mirror
    eye_centres: np.ndarray  #: (2, 3) eyeball centres of rotation, [right, left], cm
    eye_radius: float  #: iris centre's distance from the eyeball centre, cm
    lips: np.ndarray  #: vertex indices of the lip contours
    right_eye: np.ndarray  #: vertex indices of the right eyelid contour
    left_eye: np.ndarray
    right_brow: np.ndarray
    left_brow: np.ndarray
    face_oval: np.ndarray
    rigid: np.ndarray  #: vertex indices for the rigid head fit (forehead, nose, cheekbones)


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The shipped template (loaded once per process; read-only)."""
    data = np.load(model_path("template_face.npz"))
    vertices = data["vertices"]
    moving = set(data["lips"]) | set(data["right_eye"]) | set(data["left_eye"])
    moving |= set(data["right_brow"]) | set(data["left_brow"])
    nose_tip_y = vertices[4, 1]
    rigid = np.array([i for i in range(len(vertices))
                      if i not in moving and vertices[i, 1] > nose_tip_y + _EXPRESSIVE_BELOW_NOSE_CM],
                     dtype=np.int32)
    arrays = {k: data[k] for k in ("vertices", "triangles", "mirror", "eye_centres", "lips", "right_eye",
                                   "left_eye", "right_brow", "left_brow", "face_oval")}
    for value in arrays.values():
        value.setflags(write=False)
    rigid.setflags(write=False)
    return Template(eye_radius=float(data["eye_radius"]), rigid=rigid, **arrays)

"""The avatar's upper body: the same neutral neck, shoulders and plain top for everyone.

A head alone reads as a head on a pole; a person in a video call has shoulders.
:class:`UpperBody` is that body, built once in the template head's frame (cm; x to
the image's right, y up, z towards the camera): a neck of human length under the
jaw (:data:`NECK_BELOW_CHIN_CM` between the chin and the collar at the front),
shoulders :data:`SHOULDER_WIDTH_CM` across, and a top of one flat colour
(:data:`TOP`) from a crew neckline down, well past the bottom of any picture.

It carries nothing of the patient's body: there is no body tracking, and
:meth:`UpperBody.pose` takes only the head's drawn rotation. The body follows the
head as a person's does: it hangs from the head's neck pivot (:data:`PIVOT`), so it
moves with ``head_x``, ``head_y`` and ``head_scale``, and it turns by a damped share
of the head's yaw and roll (:func:`body_angles`) and not at all with its pitch (a nod
leaves the shoulders where they are). The neck bends between the two: its top
follows the head fully, so it stays inside the head, and from the jaw down to the
collar it blends into the body's pose.
"""

from __future__ import annotations

import math

import numpy as np

#: Shares of the head's yaw, pitch and roll that the body turns by.
YAW_SHARE, PITCH_SHARE, ROLL_SHARE = 0.3, 0.0, 0.3
#: Neck: half-width, half-depth and centre depth (cm) of its elliptic cross-section; it starts
#: inside the head at NECK_TOP_Y and is a plain neck down to NECK_BASE_Y (cm).
NECK_RX_CM, NECK_RZ_CM, NECK_Z_CM = 5.6, 5.0, -6.3
NECK_TOP_Y, NECK_BASE_Y = -4.5, -11.5
#: The template's chin (vertex 152) is at y = -8.77 cm; the neckline is this far below it at the
#: front (the visible neck), and at the sides and back it sits at NECKLINE_SIDE_Y (cm).
CHIN_Y = -8.77
NECK_BELOW_CHIN_CM = 9.0
NECKLINE_SIDE_Y = -13.8
#: Shoulders: overall width (cm; adults' mean shoulder-bone breadth is 36-40, across the deltoids
#: 43-49), reached this far (cm) below the neck's base; chest half-depth and centre depth (cm); and
#: the torso's superellipse exponent (2 = the neck's ellipse; larger = squarer).
SHOULDER_WIDTH_CM = 40.0
SHOULDER_DROP_CM = 12.5
CHEST_RZ_CM, CHEST_Z_CM = 9.0, -7.8
TORSO_POWER = 2.8
#: The body ends this far below the head's origin (cm), past the picture's bottom edge unless
#: the face is tiny.
BOTTOM_Y = -110.0
#: The neck bends between these heights (cm): above, it follows the head; below, the body.
BEND_TOP_Y, BEND_BOTTOM_Y = -7.0, -13.0
#: The point (head frame, cm) about which the head turns on the body: at the neck's base.
PIVOT = np.array([0.0, NECK_BASE_Y, NECK_Z_CM])
#: Colours: the neck's skin (the head's skin a little in shade) and the top's flat colour (a dark
#: slate blue, unlike the skin and the background).
NECK_SKIN = (0.74, 0.56, 0.47)
TOP = (0.20, 0.27, 0.36)
#: Rows from the neck's top to the neckline, from the neckline to the shoulders' flat part
#: (TORSO_FLAT_Y), and fixed rows below; points around each row. As few as keep the outline smooth at
#: 640x480: on a CPU rasteriser every triangle costs its setup, on screen or not.
NECK_ROWS, SHOULDER_ROWS = 6, 12
TORSO_FLAT_Y = -25.0
TORSO_ROWS_Y = (-28.0, -34.0, -45.0, -65.0, BOTTOM_Y)
SEGMENTS = 32


def body_angles(yaw: float, pitch: float, roll: float) -> tuple[float, float, float]:
    """The body's (yaw, pitch, roll) in degrees for the head's: the damped shares."""
    return YAW_SHARE * yaw, PITCH_SHARE * pitch, ROLL_SHARE * roll


def neckline_y(phi: np.ndarray) -> np.ndarray:
    """Height (cm) of the top's neckline at angle ``phi`` round the neck (pi/2 = front): a crew neck."""
    front = np.clip(np.sin(phi), 0.0, None) ** 2
    return NECKLINE_SIDE_Y + (CHIN_Y - NECK_BELOW_CHIN_CM - NECKLINE_SIDE_Y) * front


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _shoulder(y: np.ndarray) -> np.ndarray:
    """0 on the neck, rising to 1 at the shoulders' full width: a short fillet where the neck meets
    the trapezius, the trapezius's slope, then the deltoid's round."""
    t = np.clip((NECK_BASE_Y - y) / SHOULDER_DROP_CM, 0.0, 1.0)
    return (1.0 - (1.0 - t) ** 2) * _smoothstep(t / 0.2)


def surface(y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Points (..., 3) of the body's surface at heights ``y`` (cm) and angles ``phi`` (0 = the image's right)."""
    s = _shoulder(y)
    depth = _smoothstep((NECK_BASE_Y - y) / 16.0)
    half_x = NECK_RX_CM + (SHOULDER_WIDTH_CM / 2 - NECK_RX_CM) * s
    half_x = half_x * (1.0 - 0.05 * _smoothstep((-30.0 - y) / 40.0))  # a slightly narrower waist
    half_z = NECK_RZ_CM + (CHEST_RZ_CM - NECK_RZ_CM) * depth
    centre_z = NECK_Z_CM + (CHEST_Z_CM - NECK_Z_CM) * depth
    exponent = 2.0 / (2.0 + (TORSO_POWER - 2.0) * s)
    cos, sin = np.cos(phi), np.sin(phi)
    x = half_x * np.sign(cos) * np.abs(cos) ** exponent
    z = centre_z + half_z * np.sign(sin) * np.abs(sin) ** exponent
    return np.stack([x, np.broadcast_to(y, x.shape), z], axis=-1)


def _vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals."""
    a, b, c = (positions[triangles[:, k]] for k in range(3))
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(positions)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)


class UpperBody:
    """The neutral upper body's mesh (built once) and its pose for a head rotation (see the module docstring).

    ``rest``, ``normals`` and ``colours`` are (V, 3); ``triangles`` (T, 3) int32, counter-clockwise
    seen from outside; ``follow`` (V,) is how much each vertex follows the head rather than the body.
    """

    def __init__(self, segments: int = SEGMENTS) -> None:
        phi = np.linspace(0.0, 2.0 * math.pi, segments, endpoint=False)
        neckline = neckline_y(phi)
        neck = [NECK_TOP_Y + t * (neckline - NECK_TOP_Y) for t in np.linspace(0.0, 1.0, NECK_ROWS + 1)]
        shoulders = [neckline + t * (TORSO_FLAT_Y - neckline) for t in np.linspace(0.0, 1.0, SHOULDER_ROWS + 1)]
        rows = np.array(neck + shoulders[1:] + [np.full(segments, y) for y in TORSO_ROWS_Y])
        grid = surface(rows, np.broadcast_to(phi, rows.shape))  # (rows, segments, 3)
        n_rows = len(rows)
        ids = np.arange(n_rows * segments).reshape(n_rows, segments)
        a, b = ids[:-1], np.roll(ids[:-1], -1, axis=1)
        c, d = ids[1:], np.roll(ids[1:], -1, axis=1)
        quads = np.stack([np.stack([a, b, c], -1), np.stack([b, d, c], -1)], axis=2).reshape(-1, 3)
        positions = grid.reshape(-1, 3)
        normals = _vertex_normals(positions, quads)
        # The neckline row is doubled, skin above and the top below, so the colours meet on a sharp line.
        split = NECK_ROWS * segments  # first vertex of the neckline row
        doubled = np.arange(split, split + segments)
        self.rest = np.concatenate([positions, positions[doubled]])
        self.normals = np.concatenate([normals, normals[doubled]]).astype(np.float32)
        extra = len(positions) - split  # the copy's index is the original's + extra
        below = quads.min(axis=1) >= split  # rows from the neckline down: drawn with the top's copy
        quads = quads.copy()
        quads[below] = np.where(quads[below] < split + segments, quads[below] + extra, quads[below])
        self.triangles = quads.astype(np.int32)
        colours = np.empty((len(self.rest), 3), dtype=np.float32)
        colours[:split + segments] = NECK_SKIN
        colours[split + segments:] = TOP
        self.colours = colours
        y = self.rest[:, 1]
        self.follow = 1.0 - _smoothstep((BEND_TOP_Y - y) / (BEND_TOP_Y - BEND_BOTTOM_Y))
        # the rows are in order from the top: the bending neck lies within the first _bend vertices
        self._bend = int(np.nonzero(self.follow > 0.0)[0].max()) + 1
        self._rest_from_pivot = self.rest - PIVOT
        tips = surface(np.array([NECK_BASE_Y - SHOULDER_DROP_CM] * 2), np.array([0.0, math.pi]))
        #: (2, 3) the shoulders' outer points [image right, image left] at their full width (cm).
        self.shoulder_tips = tips

    def pose(self, head: np.ndarray, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions and normals (float32, (V, 3)) in the head's camera frame (cm, from the template origin).

        ``head`` is the head's rotation and ``body`` the body's (of :func:`body_angles`), both as the
        renderer draws them; the body turns about :data:`PIVOT` carried by the head.
        """
        positions = self._rest_from_pivot @ body.T + head @ PIVOT
        normals = self.normals @ body.T.astype(np.float32)
        k = self._bend
        w = self.follow[:k, None]
        positions[:k] = w * (self.rest[:k] @ head.T) + (1.0 - w) * positions[:k]
        bent = w * (self.normals[:k] @ head.T) + (1.0 - w) * normals[:k]
        normals[:k] = bent / np.linalg.norm(bent, axis=1, keepdims=True)
        return positions.astype(np.float32), normals

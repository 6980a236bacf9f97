"""The avatar's geometry: the template head, closed into a whole head, and its per-frame deformation.

Everything here is in the template's head frame (cm; x to the image's right,
y up, z towards the camera) and depends on :class:`~proxy.params.MaskParams`
only. :class:`AvatarMesh` builds, once, the vertex layout the renderer
uploads: the 468 template vertices, a skirt that closes the face mask into a
head (scalp with hair, sides, under the jaw), and "tubes" that line the eye
and mouth openings (dark socket, dark mouth) so no opening shows the inside
of the head. Each frame :meth:`AvatarMesh.deform` moves the lids, brows and
lips to what the parameters say, with exactly the geometry that
``Retargeter`` measures (lid heights from the corner line in eye widths,
inner-lip gap over mouth width). The lid heights it gets are the drawn ones:
:mod:`proxy.avatar.calibration` turns measured lids into them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from proxy.avatar.template import Template
from proxy.params import MaskParams

#: Eye contours in the iris model's order (0 outer corner, 1-7 lower lid, 8 inner corner,
#: 9-15 upper lid); the same as ``proxy.tracking.tracker.RIGHT_EYE_CONTOUR`` / ``LEFT_EYE_CONTOUR``.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
#: Inner lip contour as a loop: corner, lower lip, other corner, upper lip back.
INNER_LIP_LOOP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
MOUTH_CORNERS = (61, 291)
INNER_LIPS = (13, 14)

#: Iris and pupil radius (cm): 11.7 mm across, the population mean.
IRIS_RADIUS_CM = 0.585
PUPIL_RADIUS_CM = 0.2
#: Radius of the drawn globe (cm). An anatomical one (1.2 cm) turns away from the viewer well
#: inside a wide-open fissure (0.8 eye widths is 2.1 cm here), leaving a grey rim and the dark
#: socket in the corners; this flatter globe fills the opening with sclera to the corners. Its
#: front stays where the anatomical globe's is (:func:`eyeball_centres`), and it turns about its
#: own centre; the calibration takes up what that does to the iris's travel.
EYEBALL_RADIUS_CM = 1.5
#: A closed upper lid ends this far (eye widths) below the lower lid's margin.
CLOSED_OVERLAP = 0.02
#: A closing eye's seam sinks onto a downward arc this deep (eye widths), as in a real blink,
#: where the upper lid comes down over the lower one. A straight seam reads as half-open.
CLOSED_SEAM = 0.12
#: Highest drawn upper lid and lowest drawn lower lid (eye widths from the corner line): the
#: globe's edge. Between them the fissure opens to 0.8 eye widths and more.
MAX_UPPER_LID, MAX_LOWER_LID = 0.56, 0.5
#: The upper lid's share of the opening while the measured share is not usable (both lids at
#: the corner line): about the neutral face's (0.2 of 0.32).
NEUTRAL_UPPER_SHARE = 0.6
#: Range of the upper lid's share of the opening that is drawn.
UPPER_SHARE_RANGE = (0.2, 0.85)
#: How far the lid skin stays in front of the eyeball's surface (cm).
LID_CLEARANCE_CM = 0.06
#: Lid profile exponent: height(s) = h * (1 - s^2) ** LID_PROFILE_POWER between the corners.
LID_PROFILE_POWER = 0.75
#: Reach (cm) of the skin that follows a moving lid: it follows fully at the margin and less
#: linearly with distance, so the lid skin folds evenly and never runs over the margin (the
#: margin's triangles and its lash line stay open even when the lid opens 0.8 eye widths).
LID_BAND_CM = 1.2
BROW_BAND_CM = 1.5
SMILE_BAND_CM = 1.8

SKIN = (0.80, 0.62, 0.52)
LIP = (0.66, 0.38, 0.36)
BROW = (0.30, 0.22, 0.18)
HAIR = (0.22, 0.17, 0.14)
SOCKET = (0.62, 0.42, 0.40)
LASH = (0.12, 0.08, 0.07)
#: The upper lash line: a ribbon along the upper lid margin, this wide (cm) at the lid's highest
#: point and 0.3 of it at the corners, just in front of the lid (cm) and tilted forwards (cm).
#: A closed eye keeps it: the tracker, like a person, reads the line as a closed lid.
LASH_CM, LASH_LIFT_CM, LASH_FORWARD_CM = 0.12, 0.03, 0.08
MOUTH = (0.16, 0.05, 0.05)

#: Skirt: centre of the skull (cm), back-of-head radius and number of rings.
SKULL_CENTRE = np.array([0.0, 0.8, -5.5])
SKULL_BACK_CM = 9.8
SKIRT_RINGS = 7


def eyeball_centres(template: Template) -> np.ndarray:
    """(2, 3) drawn globe centres [right, left], in the head frame (cm).

    The anatomical globe has the iris rim (11.7 mm across) ``Template.eye_radius`` (1.05 cm) in
    front of the template's centre of rotation: radius sqrt(1.05^2 + 0.585^2). The drawn globe
    lies behind that centre by as much as :data:`EYEBALL_RADIUS_CM` exceeds this radius, so
    that its front stays where the anatomical one's is.
    """
    anatomical = math.hypot(template.eye_radius, IRIS_RADIUS_CM)
    centres = template.eye_centres.astype(np.float64).copy()
    centres[:, 2] -= EYEBALL_RADIUS_CM - anatomical
    return centres


def upper_share(upper: float, lower: float) -> float:
    """The upper lid's share of the opening for measured lid heights (a drooping lid keeps a low share)."""
    total = upper + lower
    if total <= 0.05:
        return NEUTRAL_UPPER_SHARE
    return float(np.clip(upper / total, *UPPER_SHARE_RANGE))


def drawn_lids(opening: float, share: float) -> tuple[float, float]:
    """Upper and lower lid heights (eye widths) that draw ``opening`` with the upper lid's ``share``.

    Within the globe's edge (:data:`MAX_UPPER_LID`, :data:`MAX_LOWER_LID`) the other lid takes what
    one cannot; a closing eye's seam sinks onto the downward arc of a real blink.
    """
    opening = float(np.clip(opening, 0.0, MAX_UPPER_LID + MAX_LOWER_LID))
    up = min(float(np.clip(share, *UPPER_SHARE_RANGE)) * opening, MAX_UPPER_LID)
    low = opening - up
    if low > MAX_LOWER_LID:
        low = MAX_LOWER_LID
        up = opening - low
    sink = CLOSED_SEAM * max(0.0, 1.0 - opening / 0.12)
    if low < sink:
        low = sink
        up = opening - low
    return up, low


def _margins(eye: _Eye, upper: float, lower: float) -> tuple[float, float]:
    """Upper and lower margin heights above the corner line (cm) drawn for lid heights in eye widths."""
    up = float(np.clip(upper, -0.15, MAX_UPPER_LID)) * eye.width
    down = -float(np.clip(lower, -0.15, MAX_LOWER_LID)) * eye.width  # lower margin height (negative below)
    if up < down + CLOSED_OVERLAP * eye.width:
        # closed: the margins meet, the upper one just over the lower so no sliver stays open
        up = down = (up + down) / 2
        up -= CLOSED_OVERLAP * eye.width
    return up, down


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _falloff(distance: np.ndarray, reach: float) -> np.ndarray:
    return np.clip(1.0 - distance / reach, 0.0, 1.0) ** 2


@dataclass
class _Eye:
    """One eye's lid rig, precomputed from the template."""

    contour: np.ndarray  #: (16,) vertex indices, iris-model order
    corner: np.ndarray  #: (2,) outer corner xy
    axis: np.ndarray  #: (2,) unit vector outer -> inner corner
    normal: np.ndarray  #: (2,) unit "up" perpendicular to the axis
    width: float  #: corner distance (cm)
    profile: np.ndarray  #: (16,) lid shape factor at each contour point (0 at the corners)
    rest: np.ndarray  #: (16,) rest heights above the corner line (cm)
    band: np.ndarray  #: (V, 16) how much each vertex follows each contour point's move
    centre: np.ndarray  #: (3,) eyeball centre
    near: np.ndarray  #: indices of vertices that must clear the eyeball
    lash_profile: np.ndarray  #: (9,) lash width factor along outer corner, upper lid, inner corner


class AvatarMesh:
    """Vertex layout and deformation of the avatar head (see the module docstring)."""

    def __init__(self, template: Template) -> None:
        self.template = template
        base = template.vertices.astype(np.float64)
        skirt, skirt_tris, hair = self._skirt(base)
        n_face = len(base)
        self.n_face = n_face
        positions = [base, skirt]
        triangles = [template.triangles.astype(np.int64), skirt_tris + n_face]
        offset = n_face + len(skirt)
        # Tubes: each follows a contour loop back into the head; their vertices are recomputed
        # from the contour every frame, so they are placeholders here.
        self._tubes: list[tuple[np.ndarray, int, float, float]] = []
        for loop, depth, shrink in ((self._eye_loop(RIGHT_EYE_CONTOUR), 0.0, 1.0),
                                    (self._eye_loop(LEFT_EYE_CONTOUR), 0.0, 1.0),
                                    (np.array(INNER_LIP_LOOP), 1.3, 0.85)):
            n = len(loop)
            positions.append(np.zeros((n + 1, 3)))
            tris = []
            for i in range(n):
                j = (i + 1) % n
                a, b, c, d = loop[i], loop[j], offset + i, offset + j
                tris += [(a, c, b), (b, c, d), (c, offset + n, d)]
            triangles.append(np.array(tris, dtype=np.int64))
            self._tubes.append((loop, offset, depth, shrink))
            offset += n + 1
        # Lash lines: a dark ribbon along each upper lid margin (corners included), recomputed every frame.
        self._lashes: list[tuple[np.ndarray, int]] = []
        for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR):
            line = np.array([contour[0], *contour[9:16], contour[8]])
            n = len(line)
            positions.append(np.zeros((2 * n, 3)))
            tris = []
            for i in range(n - 1):
                a, b, c, d = offset + i, offset + i + 1, offset + n + i, offset + n + i + 1
                tris += [(a, b, c), (b, d, c)]
            triangles.append(np.array(tris, dtype=np.int64))
            self._lashes.append((line, offset))
            offset += 2 * n
        self.rest = np.concatenate(positions)
        self._surface = np.concatenate(triangles[:2])
        # the skin's shell less the triangles over the openings, then the linings and lash lines (none spans an opening)
        shell = self._drop_openings(self._surface.astype(np.int32))
        self.triangles = np.concatenate([shell, *triangles[2:]]).astype(np.int32)
        self.colours = self._colours(len(self.rest), n_face, len(skirt), hair)
        self._eyes = [self._eye_rig(RIGHT_EYE_CONTOUR, 0), self._eye_rig(LEFT_EYE_CONTOUR, 1)]
        self._brows = [self._region_weights(template.right_brow, BROW_BAND_CM, exclude=template.right_eye),
                       self._region_weights(template.left_brow, BROW_BAND_CM, exclude=template.left_eye)]
        self._mouth_rig()
        self._order_triangles(len(shell))
        self._positions = self.rest.copy()
        # Shading normals are those of the neutral face: moving lids and lips then keep the
        # neutral's smooth shading instead of showing folds as dark creases (and it is cheaper).
        # The linings' own faces are left out so they cannot bend the rims' normals.
        self.normals = self._vertex_normals(self._deform(MaskParams(face=True)).copy(), self._surface)
        self.normals[n_face + len(skirt):] = (0.0, 0.0, 1.0)

    # ---- construction -------------------------------------------------------------------

    def _eye_loop(self, contour: tuple[int, ...]) -> np.ndarray:
        """Contour as a closed loop: outer corner, lower lid, inner corner, upper lid back."""
        c = np.array(contour)
        return np.concatenate([c[:9], c[9:][::-1]])

    def _drop_openings(self, triangles: np.ndarray) -> np.ndarray:
        """Remove any face triangle spanning an eye or the mouth opening (all 3 vertices on its rim)."""
        keep = np.ones(len(triangles), dtype=bool)
        for rim in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR, INNER_LIP_LOOP):
            keep &= ~np.isin(triangles, rim).all(1)
        return triangles[keep]

    def _skirt(self, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rings from the face oval round to the back of the head; returns vertices, triangles, hair."""
        oval = np.array(self.template.face_oval)
        angle = np.arctan2(base[oval, 1], base[oval, 0])
        oval = oval[np.argsort(angle)]
        rel = base[oval] - SKULL_CENTRE
        radius = np.linalg.norm(rel, axis=1)
        unit = rel / radius[:, None]
        back = np.array([0.0, 0.0, -1.0])
        rings = []
        for k in range(1, SKIRT_RINGS + 1):
            u = k / (SKIRT_RINGS + 1)
            cos = np.clip(unit @ back, -1.0, 1.0)
            omega = np.arccos(cos)[:, None]
            sin = np.maximum(np.sin(omega), 1e-6)
            direction = (np.sin((1 - u) * omega) * unit + np.sin(u * omega) * back) / sin
            r = (1 - u) * radius + u * SKULL_BACK_CM
            # the skull bulges above the hairline more than the jaw does below it
            bulge = 1.0 + np.sin(math.pi * u) * np.where(direction[:, 1] > 0, 0.12, 0.0)
            rings.append(SKULL_CENTRE + direction * (r * bulge)[:, None])
        ring_v = np.concatenate(rings)
        pole = SKULL_CENTRE + back * SKULL_BACK_CM
        vertices = np.concatenate([ring_v, pole[None]])
        m = len(oval)
        n_face = len(base)
        tris = []

        def vid(ring: int, i: int) -> int:
            """Index in the combined layout (ring 0 = the oval itself)."""
            i %= m
            return int(oval[i]) if ring == 0 else n_face + (ring - 1) * m + i

        for ring in range(SKIRT_RINGS):
            for i in range(m):
                a, b = vid(ring, i), vid(ring, i + 1)
                c, d = vid(ring + 1, i), vid(ring + 1, i + 1)
                tris += [(a, c, b), (b, c, d)]
        pole_id = n_face + SKIRT_RINGS * m
        for i in range(m):
            tris.append((vid(SKIRT_RINGS, i), pole_id, vid(SKIRT_RINGS, i + 1)))
        rel_v = vertices - SKULL_CENTRE
        dir_v = rel_v / np.linalg.norm(rel_v, axis=1, keepdims=True)
        ring_index = np.concatenate([np.repeat(np.arange(1, SKIRT_RINGS + 1), m), [SKIRT_RINGS + 1]])
        top = _smoothstep(0.25, 0.45, dir_v[:, 1])
        backside = _smoothstep(-0.2, -0.5, dir_v[:, 2]) * _smoothstep(-0.55, -0.3, dir_v[:, 1])
        hair = np.maximum(top, backside) * (ring_index >= 1)
        return vertices, np.array(tris, dtype=np.int64) - n_face, hair

    def _colours(self, n: int, n_face: int, n_skirt: int, hair: np.ndarray) -> np.ndarray:
        """RGB per vertex."""
        t = self.template
        colours = np.zeros((n, 3))
        colours[:] = SKIN
        colours[n_face:n_face + n_skirt] = (np.array(SKIN)[None] * (1 - hair[:, None])
                                            + np.array(HAIR)[None] * hair[:, None])
        colours[t.lips] = LIP
        for brow in (t.right_brow, t.left_brow):
            colours[brow] = BROW
        for loop, offset, depth, _ in self._tubes:
            colours[offset:offset + len(loop) + 1] = MOUTH if depth > 0 else SOCKET
        for line, offset in self._lashes:
            colours[offset:offset + 2 * len(line)] = LASH
        return colours.astype(np.float32)

    def _eye_rig(self, contour: tuple[int, ...], index: int) -> _Eye:
        v = self.rest
        c = np.array(contour)
        corner, inner = v[c[0], :2], v[c[8], :2]
        axis = inner - corner
        width = float(np.linalg.norm(axis))
        axis /= width
        normal = np.array([-axis[1], axis[0]])
        if normal[1] < 0:
            normal = -normal
        rel = v[c, :2] - corner
        s = 2.0 * (rel @ axis) / width - 1.0
        profile = np.clip(1.0 - s**2, 0.0, 1.0) ** LID_PROFILE_POWER
        profile[[0, 8]] = 0.0
        # the highest measured point (Retargeter's LID_PAIRS: contour 10-14 and 2-6) is the margin
        profile[9:16] /= profile[10:15].max()
        profile[1:8] /= profile[2:7].max()
        rest = rel @ normal
        # band: skin around the eye follows the nearest contour points on the same side
        n = self.n_face
        band = np.zeros((len(v), 16))
        upper_ids, lower_ids = np.arange(9, 16), np.arange(1, 8)
        for vid in range(n):
            if vid in c:
                continue
            p = v[vid]
            d_all = np.linalg.norm(v[c] - p, axis=1)
            if d_all.min() > LID_BAND_CM:
                continue
            height = (p[:2] - corner) @ normal
            ids = upper_ids if height > 0 else lower_ids
            d = d_all[ids]
            nearest = np.argsort(d)[:2]
            w = 1.0 / np.maximum(d[nearest], 1e-3) ** 2
            w /= w.sum()
            band[vid, ids[nearest]] = w * float(np.clip(1.0 - d.min() / LID_BAND_CM, 0.0, 1.0))
        for k, vid in enumerate(c):
            band[vid, k] = 1.0
        near = np.nonzero(band.any(1))[0]
        lash_profile = profile[[0, *range(9, 16), 8]]
        return _Eye(c, corner, axis, normal, width, profile, rest, band,
                    eyeball_centres(self.template)[index], near, lash_profile)

    def _region_weights(self, region: np.ndarray, reach: float, exclude: np.ndarray) -> np.ndarray:
        """Per-vertex weight (1 on the region, falling off around it); ``exclude`` stays still."""
        v = self.rest[:self.n_face]
        d = np.linalg.norm(v[:, None, :] - v[region][None, :, :], axis=2).min(1)
        w = _falloff(d, reach)
        w[region] = 1.0
        w[exclude] = 0.0
        full = np.zeros(len(self.rest))
        full[:self.n_face] = w
        return full

    def _mouth_rig(self) -> None:
        v = self.rest[:self.n_face]
        corners = v[list(MOUTH_CORNERS)]
        line_y = float(corners[:, 1].mean())
        half = float(abs(corners[1, 0] - corners[0, 0]) / 2)
        below = line_y - v[:, 1]
        # the jaw: everything below the mouth line, narrowing towards the corners
        width = half + 0.6 * np.clip(below, 0.0, None)
        across = np.clip(1.0 - (v[:, 0] / width) ** 2, 0.0, 1.0)
        lower = across * _smoothstep(0.0, 0.45, below) * _smoothstep(-7.5, -5.5, -np.abs(v[:, 0]))
        above = -below
        upper = (np.clip(1.0 - (v[:, 0] / half) ** 2, 0.0, 1.0) * _smoothstep(0.0, 0.3, above)
                 * _falloff(np.clip(above - 0.3, 0.0, None), 1.2))
        self._jaw = np.zeros(len(self.rest))
        self._jaw[:self.n_face] = lower
        self._upper_lip = np.zeros(len(self.rest))
        self._upper_lip[:self.n_face] = upper
        self._rest_gap = float(v[INNER_LIPS[1], 1] - v[INNER_LIPS[0], 1])  # negative: lower is below
        self._smile = []
        for side, corner in ((-1.0, MOUTH_CORNERS[0]), (1.0, MOUTH_CORNERS[1])):
            d = np.linalg.norm(v - v[corner], axis=1)
            w = np.zeros(len(self.rest))
            w[:self.n_face] = _falloff(d, SMILE_BAND_CM)
            self._smile.append((side, w))

    def _order_triangles(self, surface: int) -> None:
        """Put the skin that never moves first (:attr:`cullable_triangles` of them).

        The skin is a closed shell, so a renderer may cull the back faces of the part that never
        moves: it never turns its inside to the camera. Skin that the lids, brows, jaw, lips or smile
        move can fold over (the mouth's corners do), and the openings' linings and the lash lines are
        seen from either side: those come after, to be drawn two-sided.
        """
        moving = np.zeros(len(self.rest), dtype=bool)
        for eye in self._eyes:
            moving[eye.near] = True
        for weights in [*self._brows, self._jaw, self._upper_lip, *(w for _, w in self._smile)]:
            moving |= weights > 0
        shell = self.triangles[:surface]
        still = ~moving[shell].any(1)
        self.triangles = np.concatenate([shell[still], shell[~still], self.triangles[surface:]])
        #: The first this many of :attr:`triangles` may be drawn with back faces culled.
        self.cullable_triangles = int(still.sum())

    # ---- per frame ----------------------------------------------------------------------

    def deform(self, params: MaskParams) -> tuple[np.ndarray, np.ndarray]:
        """Vertex positions and normals (float32, (V, 3)) for ``params``' expression and lids."""
        return self._deform(params).astype(np.float32), self.normals

    def _deform(self, params: MaskParams) -> np.ndarray:
        p = self._positions
        np.copyto(p, self.rest)
        t = self.template
        eye_width = float(np.linalg.norm(t.vertices[33] - t.vertices[133]))
        # brows: straight up, in eye widths
        for w, raise_ in zip(self._brows, (params.right_brow, params.left_brow), strict=True):
            p[:, 1] += w * float(np.clip(raise_, -0.3, 0.5)) * eye_width
        # smile: the corners move out (and a little up)
        smile = float(np.clip(params.mouth_smile, -0.3, 0.6)) * eye_width / 2
        for side, w in self._smile:
            p[:, 0] += w * side * smile
            p[:, 1] += w * 0.35 * abs(smile)
        # mouth: inner-lip gap = mouth_open x mouth width, shared between jaw and upper lip
        mouth_width = float(np.linalg.norm(p[MOUTH_CORNERS[0]] - p[MOUTH_CORNERS[1]]))
        gap = float(np.clip(params.mouth_open, 0.0, 0.7)) * mouth_width
        change = gap + self._rest_gap  # how much wider than at rest
        share = 0.5 if change < 0 else 0.15
        lo, up = self._jaw[INNER_LIPS[1]], self._upper_lip[INNER_LIPS[0]]
        unit = change / max(lo * (1 - share) + up * share, 1e-6)
        p[:, 1] -= self._jaw * unit * (1 - share)
        p[:, 1] += self._upper_lip * unit * share
        # lids, at the drawn heights
        for eye, upper, lower in zip(self._eyes, (params.right_upper_lid, params.left_upper_lid),
                                     (params.right_lower_lid, params.left_lower_lid), strict=True):
            self._lids(p, eye, float(upper), float(lower))
        # tubes follow their contour back into the head
        for loop, offset, depth, shrink in self._tubes:
            rim = p[loop]
            centre = rim.mean(0)
            inner = centre + (rim - centre) * shrink
            if depth > 0:
                inner[:, 2] -= depth
                back = centre - np.array([0.0, 0.0, depth + 0.3])
            else:
                eye = self._eyes[0] if loop[0] == RIGHT_EYE_CONTOUR[0] else self._eyes[1]
                inner[:, 2] = eye.centre[2] - 0.2
                back = np.array([centre[0], centre[1], eye.centre[2] - 0.4])
            p[offset:offset + len(loop)] = inner
            p[offset + len(loop)] = back
        for (line, offset), eye in zip(self._lashes, self._eyes, strict=True):
            n = len(line)
            margin = p[line]
            thickness = LASH_CM * (0.3 + 0.7 * eye.lash_profile)
            p[offset:offset + n] = margin + (0.0, 0.0, LASH_LIFT_CM)
            p[offset + n:offset + 2 * n, :2] = margin[:, :2] + thickness[:, None] * eye.normal
            p[offset + n:offset + 2 * n, 2] = margin[:, 2] + LASH_LIFT_CM + LASH_FORWARD_CM
        return p

    def lid_margins(self, params: MaskParams) -> list[tuple[float, float]]:
        """Each eye's [right, left] drawn margin heights above its corner line (cm, the lower one negative),
        at the lids' highest points: where the eyeball's shader puts the lids' shadow."""
        return [_margins(eye, float(upper), float(lower)) for eye, upper, lower in zip(
            self._eyes, (params.right_upper_lid, params.left_upper_lid),
            (params.right_lower_lid, params.left_lower_lid), strict=True)]

    def eye_frame(self, index: int) -> tuple[np.ndarray, np.ndarray, float]:
        """One eye's outer corner (xy, cm), unit axis towards its inner corner and width (cm), in the head frame."""
        eye = self._eyes[index]
        return eye.corner, eye.axis, eye.width

    def _lids(self, p: np.ndarray, eye: _Eye, upper: float, lower: float) -> None:
        """Move the lid contour (and the skin around it) to the given lid heights (eye widths)."""
        up, down = _margins(eye, upper, lower)
        target = np.empty(16)
        target[9:16] = up * eye.profile[9:16]
        target[1:8] = down * eye.profile[1:8]
        target[[0, 8]] = eye.rest[[0, 8]]
        move = target - eye.rest
        shift = eye.band @ move
        p[:, 0] += shift * eye.normal[0]
        p[:, 1] += shift * eye.normal[1]
        # lids ride on the globe: keep the skin just in front of the eyeball
        near = eye.near
        rel = p[near, :2] - eye.centre[:2]
        r2 = (rel**2).sum(1)
        inside = r2 < EYEBALL_RADIUS_CM**2
        surface = eye.centre[2] + np.sqrt(np.maximum(EYEBALL_RADIUS_CM**2 - r2, 0.0)) + LID_CLEARANCE_CM
        z = p[near, 2]
        p[near, 2] = np.where(inside, np.maximum(z, surface), z)

    @staticmethod
    def _vertex_normals(p: np.ndarray, tri: np.ndarray) -> np.ndarray:
        """Area-weighted vertex normals of the triangles ``tri``."""
        a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
        face = np.cross(b - a, c - a)
        n = len(p)
        normals = np.zeros_like(p)
        for axis in range(3):
            normals[:, axis] = (np.bincount(tri[:, 0], face[:, axis], n) + np.bincount(tri[:, 1], face[:, axis], n)
                                + np.bincount(tri[:, 2], face[:, axis], n))
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        return (normals / np.maximum(length, 1e-9)).astype(np.float32)


def sphere(radius: float, rings: int = 24, segments: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """UV sphere around the origin with its pole on +z; (vertices (N, 3), triangles (T, 3))."""
    theta = np.linspace(0.0, math.pi, rings + 1)
    phi = np.linspace(0.0, 2 * math.pi, segments, endpoint=False)
    t, f = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(t) * np.cos(f), np.sin(t) * np.sin(f), np.cos(t)], axis=-1).reshape(-1, 3)
    tris = []
    for i in range(rings):
        for j in range(segments):
            a = i * segments + j
            b = i * segments + (j + 1) % segments
            c, d = a + segments, b + segments
            tris += [(a, c, b), (b, c, d)]
    return (unit * radius).astype(np.float32), np.array(tris, dtype=np.int32)


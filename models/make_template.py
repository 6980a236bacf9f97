"""Build the avatar's template head: one population-mean face, the same for every patient.

The template is the mean of the 468-point face meshes that our own tracker
finds on a set of photos of different people (``DIR/<person>/*``), each
person weighted equally, aligned by generalized Procrustes analysis and made
left-right symmetric. Averaging many faces and mirroring the result leaves no
single person's shape. The mesh triangulation is MediaPipe's
``FACEMESH_TESSELATION`` (Apache-2.0), read from the mediapipe 0.10.21 wheel.

Usage::

    python models/make_template.py /tmp/mp/mediapipe-0.10.21-*.whl ../shared/data/faces

Writes ``template_face.npz`` beside itself (see ``proxy/avatar/template.py`` for
its fields). Units are centimetres, with the outer eye corners 9 cm apart
(a population mean); axes x to the image's right, y up, z towards the camera.
"""

from __future__ import annotations

import argparse
import ast
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.tracking.tracker import FaceTracker  # noqa: E402

CONNECTIONS = "mediapipe/python/solutions/face_mesh_connections.py"
BIOCULAR_CM = 9.0
#: Mean iris-centre depth in front of the eyeball's centre of rotation (cm).
EYE_ROTATION_RADIUS_CM = 1.05
#: How far the lid opening lies in front of the eyeball's centre (cm).
LID_RING_DEPTH_CM = 0.9


def read_connections(wheel: Path) -> dict[str, list[tuple[int, int]]]:
    """FACEMESH_* edge sets from the wheel's connections module, without importing mediapipe."""
    source = zipfile.ZipFile(wheel).read(CONNECTIONS).decode()
    tree = ast.parse(source)
    sets: dict[str, list[tuple[int, int]]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and node.value.args:
            arg = node.value.args[0]
            if isinstance(arg, ast.List):
                name = node.targets[0].id  # type: ignore[attr-defined]
                sets[name] = [tuple(ast.literal_eval(e)) for e in arg.elts]  # type: ignore[misc]
    return sets


def triangles_from_edges(edges: list[tuple[int, int]], vertices: np.ndarray) -> np.ndarray:
    """Faces of a triangulated surface given as its edges, wound towards the camera (+z)."""
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    faces = set()
    for a, b in edges:
        for c in neighbours[a] & neighbours[b]:
            faces.add(tuple(sorted((a, b, c))))
    tris = []
    for a, b, c in sorted(faces):
        normal = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])
        # front-facing when the normal points out of the head (away from its centre)
        outward = vertices[[a, b, c]].mean(0) - np.array([0.0, 0.0, vertices[:, 2].min()])
        tris.append((a, b, c) if normal @ outward >= 0 else (a, c, b))
    return np.array(tris, dtype=np.int32)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Scale, rotation and centroids that best move ``source`` onto ``target`` (Umeyama)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    u, d, vt = np.linalg.svd((target - mu_t).T @ (source - mu_s))
    fix = np.eye(3)
    fix[2, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ fix @ vt
    scale = float((d * np.diag(fix)).sum() / ((source - mu_s) ** 2).sum())
    return scale, rotation, mu_s, mu_t


def apply(transform: tuple[float, np.ndarray, np.ndarray, np.ndarray], points: np.ndarray) -> np.ndarray:
    scale, rotation, mu_s, mu_t = transform
    return scale * (points - mu_s) @ rotation.T + mu_t


def mirror_map(vertices: np.ndarray) -> np.ndarray:
    """Index of each vertex's mirror image across the x = 0 plane."""
    flipped = vertices * np.array([-1.0, 1.0, 1.0])
    distances = np.linalg.norm(vertices[:, None, :] - flipped[None, :, :], axis=2)
    return distances.argmin(1).astype(np.int32)


def to_head_frame(landmarks: np.ndarray) -> np.ndarray:
    """Image pixels (x right, y down, z away) to x right, y up, z towards the camera."""
    return landmarks * np.array([1.0, -1.0, -1.0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path)
    parser.add_argument("faces", type=Path, help="folder of <person>/ photo folders")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "template_face.npz")
    args = parser.parse_args(argv)

    tracker = FaceTracker(smoothing=False)
    people: list[list[np.ndarray]] = []
    irises: list[np.ndarray] = []
    for person in sorted(p for p in args.faces.iterdir() if p.is_dir()):
        shapes = []
        for photo in sorted(person.iterdir()):
            image = cv2.imread(str(photo))
            if image is None:
                continue
            tracker.reset()
            track = tracker.process(np.ascontiguousarray(image[:, :, ::-1]))
            if track is None:
                continue
            iris = np.stack([track.right_iris[0], track.left_iris[0]])
            shapes.append(to_head_frame(np.concatenate([track.landmarks, iris])))
        if shapes:
            people.append(shapes)
    if len(people) < 5:
        raise SystemExit(f"need photos of at least 5 people, found {len(people)}")

    # Generalized Procrustes: align everything to the running mean until it settles.
    reference = people[0][0][:468]
    for _ in range(5):
        means = []
        for shapes in people:
            means.append(np.mean([apply(similarity_transform(s[:468], reference), s[:468]) for s in shapes], 0))
        reference = np.mean(means, axis=0)
    # Iris centres moved with their own mesh's transform: the population's mean gaze position.
    for shapes in people:
        for s in shapes:
            irises.append(apply(similarity_transform(s[:468], reference), s[468:]))

    # Canonical frame: eye line along x, centred, symmetric, in centimetres.
    right_outer, left_outer = reference[33], reference[263]
    x_axis = left_outer - right_outer
    x_axis /= np.linalg.norm(x_axis)
    up = reference[10] - reference[152]  # forehead top minus chin
    z_axis = np.cross(x_axis, up)
    z_axis /= np.linalg.norm(z_axis)
    y_axis = np.cross(z_axis, x_axis)
    basis = np.stack([x_axis, y_axis, z_axis])
    centre = reference.mean(0)
    scale = BIOCULAR_CM / np.linalg.norm(left_outer - right_outer)
    vertices = ((reference - centre) @ basis.T) * scale
    iris = ((np.mean(irises, axis=0) - centre) @ basis.T) * scale
    shift = (vertices[33, 0] + vertices[263, 0]) / 2
    vertices[:, 0] -= shift
    iris[:, 0] -= shift
    mirror = mirror_map(vertices)
    for _ in range(2):
        vertices = (vertices + vertices[mirror] * np.array([-1.0, 1.0, 1.0])) / 2
        mirror = mirror_map(vertices)
    sets = read_connections(args.wheel)
    # Eyeball centres: in primary gaze the iris centre sits midway between the eye's corners
    # (the photos' mean iris position is 2-3 mm nasal of it, biased by convergence on a near
    # camera), at the population's mean iris height; the centre of rotation lies behind the lid
    # opening, which rests on the globe about 0.9 cm in front of it. Symmetric.
    lid_ring = sorted({i for e in sets["FACEMESH_RIGHT_EYE"] + sets["FACEMESH_LEFT_EYE"] for i in e})
    depth = vertices[lid_ring, 2].mean() - LID_RING_DEPTH_CM
    half = (vertices[263, 0] + vertices[362, 0]) / 2
    height = iris[:, 1].mean()
    eye_centres = np.array([[-half, height, depth], [half, height, depth]])

    triangles = triangles_from_edges(sets["FACEMESH_TESSELATION"], vertices)

    def ring(name: str) -> np.ndarray:
        return np.array(sorted({i for e in sets[name] for i in e}), dtype=np.int32)

    np.savez_compressed(
        args.out,
        vertices=vertices.astype(np.float32),
        triangles=triangles,
        mirror=mirror,
        eye_centres=eye_centres.astype(np.float32),
        eye_radius=np.float32(EYE_ROTATION_RADIUS_CM),
        lips=ring("FACEMESH_LIPS"),
        right_eye=ring("FACEMESH_RIGHT_EYE"),
        left_eye=ring("FACEMESH_LEFT_EYE"),
        right_brow=ring("FACEMESH_RIGHT_EYEBROW"),
        left_brow=ring("FACEMESH_LEFT_EYEBROW"),
        face_oval=ring("FACEMESH_FACE_OVAL"),
        people=np.int32(len(people)),
        photos=np.int32(sum(len(p) for p in people)),
    )
    print(f"{args.out}: {len(people)} people, {sum(len(p) for p in people)} photos, "
          f"{len(triangles)} triangles, eye centres {eye_centres.round(2).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

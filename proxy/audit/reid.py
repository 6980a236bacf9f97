"""Re-identification part of ``maskproxy audit``: can face recognition tell who is behind a mask?

The attacker is dlib's face-recognition ResNet (the 128-d descriptor behind
the ``face_recognition`` package), aligned with dlib's 68-point shape
predictor. It is given every advantage a real attacker could have: the face
location found on the ORIGINAL photo, so it never fails merely because a
method hid the face from a detector. Each anonymisation method is then
judged by how often the attacker still names the right person.

Methods, each applied to every photo:

* ``none``: the original photo (the attacker's ceiling).
* ``mask``: our avatar (:class:`~proxy.pipeline.MaskPipeline`, tracker reset per photo;
  where our tracker finds no face the product outputs the neutral avatar, and so do we).
* ``control``: the same avatar with every movement neutral, drawn only at the face's place
  and size. No mask can link less than this: what it links comes from where and how large
  the faces are in the photos (for example two photo sources of different resolution), not
  from anything the mask carries.
* ``blur``: Gaussian blur of the face box (enlarged 1.25x), sigma = 1/12 of its width.
* ``pixelate``: the face box (enlarged 1.25x) resampled to 8x8 cells.
* ``eyes``: only the eye band visible (dlib's brow and eye landmarks, padded), the rest grey.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from proxy.files.media import PHOTO_EXTENSIONS, InputError, read_photo
from proxy.params import MaskParams

METHODS: tuple[str, ...] = ("none", "mask", "control", "blur", "pixelate", "eyes")
METHOD_LABELS: dict[str, str] = {
    "none": "original (no protection)",
    "mask": "digital mask (our avatar)",
    "control": "avatar with every movement neutral, at the face's place and size",
    "blur": "Gaussian blur of the face",
    "pixelate": "8x8 pixelation of the face",
    "eyes": "eye region only",
}
#: Face boxes are enlarged by this factor (about their centre) before blurring or pixelating.
BOX_ENLARGE = 1.25
#: Blur sigma as a fraction of the enlarged box's width.
BLUR_SIGMA = 1.0 / 12.0
#: Pixelation grid (cells across and down the enlarged box).
PIXEL_CELLS = 8
#: Grey of everything outside the eye band.
GREY = 128
#: Side of the face thumbnails kept for the report and the human test kit (pixels).
THUMB = 128
#: False accept rate at which the true accept rate is reported.
FAR_TARGET = 0.01
#: dlib's own "same person" distance threshold, reported beside the FAR-based one.
DLIB_THRESHOLD = 0.6
#: Random choices of each person's reference photo over which Rank-1 is also reported: with few
#: persons and photos, which photo happens to be the reference moves Rank-1 a lot.
REFERENCE_DRAWS = 500

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), image pixels


@dataclass
class PhotoResult:
    """Everything the audit keeps about one photo (no full-size pixels)."""

    person: str
    path: Path
    size: tuple[int, int]  #: width, height
    box: Box | None = None  #: the attacker's face location on the original
    box_source: str | None = None  #: "dlib-hog", "blazeface" or None (skipped)
    skip_reason: str | None = None
    tracked: bool = False  #: our tracker found a face (else the neutral avatar was output)
    descriptors: dict[str, np.ndarray | None] = field(default_factory=dict)
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)  #: face crops per method, THUMB x THUMB

    @property
    def used(self) -> bool:
        return self.box is not None


def list_photos(faces: Path, max_photos: int | None = None) -> dict[str, list[Path]]:
    """``faces/<person>/`` photos, sorted; at most ``max_photos`` per person."""
    if not faces.is_dir():
        raise InputError(f"{faces}: not a directory")
    persons: dict[str, list[Path]] = {}
    for folder in sorted(p for p in faces.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS)
        if max_photos is not None:
            photos = photos[:max_photos]
        if photos:
            persons[folder.name] = photos
    if not persons:
        raise InputError(f"{faces}: no <person>/ folders with photos")
    return persons


def enlarge(box: Box, factor: float, width: int, height: int) -> Box:
    """``box`` scaled about its centre, clipped to the image."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return (max(0, round(cx - hw)), max(0, round(cy - hh)), min(width, round(cx + hw)), min(height, round(cy + hh)))


def blur_face(rgb: np.ndarray, box: Box) -> np.ndarray:
    """Gaussian blur of the enlarged face box (scale-free: sigma follows the box)."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = enlarge(box, BOX_ENLARGE, width, height)
    out = rgb.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    sigma = max(1.0, (x1 - x0) * BLUR_SIGMA)
    pad = int(math.ceil(3 * sigma))
    px0, py0, px1, py1 = max(0, x0 - pad), max(0, y0 - pad), min(width, x1 + pad), min(height, y1 + pad)
    blurred = cv2.GaussianBlur(rgb[py0:py1, px0:px1], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    out[y0:y1, x0:x1] = blurred[y0 - py0:y1 - py0, x0 - px0:x1 - px0]
    return out


def pixelate_face(rgb: np.ndarray, box: Box, cells: int = PIXEL_CELLS) -> np.ndarray:
    """The enlarged face box as a ``cells`` x ``cells`` mosaic."""
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = enlarge(box, BOX_ENLARGE, width, height)
    out = rgb.copy()
    if x1 - x0 < cells or y1 - y0 < cells:
        return out
    small = cv2.resize(rgb[y0:y1, x0:x1], (cells, cells), interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return out


def eye_band(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Only the band around brows and eyes (dlib points 17-26, 36-47) left; the rest grey."""
    height, width = rgb.shape[:2]
    points = np.concatenate([landmarks[17:27], landmarks[36:48]])
    eye_distance = float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0)))
    x0, y0 = points.min(0) - np.array([0.25, 0.15]) * eye_distance
    x1, y1 = points.max(0) + np.array([0.25, 0.25]) * eye_distance
    x0, y0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    x1, y1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
    out = np.full_like(rgb, GREY)
    out[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
    return out


def face_thumb(rgb: np.ndarray, box: Box, size: int = THUMB, factor: float = 1.6) -> np.ndarray:
    """A square crop around the face box (``factor`` x its larger side), grey outside the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * factor
    scale = size / side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.array([[scale, 0.0, size / 2 - cx * scale], [0.0, scale, size / 2 - cy * scale]])
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(GREY, GREY, GREY))


class Attacker:
    """dlib's HOG face detector, 68-point shape predictor and face-recognition ResNet."""

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as exc:
            raise InputError(f"the audit needs dlib and face_recognition_models ({exc.name} missing): "
                             "pip install 'maskproxy[audit]'") from None
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.net = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def locate(self, rgb: np.ndarray) -> Box | None:
        """The largest face dlib's HOG detector finds (upsampled once), or None."""
        faces = self.detector(rgb, 1)
        if not faces:
            return None
        face = max(faces, key=lambda r: r.width() * r.height())
        return (face.left(), face.top(), face.right() + 1, face.bottom() + 1)

    def _rect(self, box: Box) -> Any:
        x0, y0, x1, y1 = box
        return self._dlib.rectangle(int(x0), int(y0), int(x1) - 1, int(y1) - 1)

    def landmarks(self, rgb: np.ndarray, box: Box) -> np.ndarray:
        """The 68 dlib landmarks (x, y) fitted inside ``box``."""
        shape = self.shapes(rgb, self._rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def descriptor(self, rgb: np.ndarray, box: Box) -> np.ndarray | None:
        """128-d descriptor of the face at ``box`` (aligned on this image), None if dlib fails."""
        try:
            shape = self.shapes(rgb, self._rect(box))
            return np.asarray(self.net.compute_face_descriptor(rgb, shape), dtype=np.float64)
        except RuntimeError:
            return None


def process_photo(person: str, path: Path, attacker: Attacker, pipeline: Any,
                  fallback_detect: Callable[[np.ndarray], Box | None]) -> PhotoResult:
    """Locate the face on the original once, then apply every method and describe it there."""
    try:
        rgb = read_photo(path)
    except InputError as exc:
        return PhotoResult(person, path, (0, 0), skip_reason=str(exc))
    height, width = rgb.shape[:2]
    result = PhotoResult(person, path, (width, height))
    box = attacker.locate(rgb)
    result.box_source = "dlib-hog"
    if box is None:
        box = fallback_detect(rgb)
        result.box_source = "blazeface"
    if box is None:
        result.box_source = None
        result.skip_reason = "no face found by dlib's HOG detector nor by our detector"
        return result
    result.box = box
    pipeline.reset()
    params, avatar = pipeline.process(rgb, 0.0, 0)
    result.tracked = bool(params.face)
    control = MaskParams(face=params.face, head_x=params.head_x, head_y=params.head_y, head_scale=params.head_scale)
    images = {
        "none": rgb,
        "mask": np.ascontiguousarray(avatar),
        "control": pipeline.render(control, width, height),
        "blur": blur_face(rgb, box),
        "pixelate": pixelate_face(rgb, box),
        "eyes": eye_band(rgb, attacker.landmarks(rgb, box)),
    }
    for method, image in images.items():
        result.descriptors[method] = attacker.descriptor(image, box)
        result.thumbs[method] = face_thumb(image, box)
    return result


def blazeface_box(detector: Any) -> Callable[[np.ndarray], Box | None]:
    """Our own detector (BlazeFace) as the attacker's fallback face location."""

    def detect(rgb: np.ndarray) -> Box | None:
        detections = detector.detect(rgb)
        if not detections:
            return None
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = detections[0].box
        box = (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))
        return box if box[2] > box[0] and box[3] > box[1] else None

    return detect


@dataclass
class Gallery:
    """Who is the reference and who are the queries, over the photos that were used."""

    persons: list[str]  #: every person with at least one used photo (the gallery), sorted
    references: dict[str, PhotoResult]
    queries: list[PhotoResult]

    @classmethod
    def build(cls, photos: Iterable[PhotoResult]) -> Gallery:
        """Per person the first used photo (sorted) is the reference, the other used ones queries."""
        by_person: dict[str, list[PhotoResult]] = {}
        for photo in photos:
            if photo.used:
                by_person.setdefault(photo.person, []).append(photo)
        references, queries = {}, []
        for person in sorted(by_person):
            items = sorted(by_person[person], key=lambda p: p.path.name)
            references[person] = items[0]
            queries.extend(items[1:])
        return cls(sorted(by_person), references, queries)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.persons) if self.persons else float("nan")


def distance_matrix(queries: list[np.ndarray | None], refs: list[np.ndarray | None]) -> np.ndarray:
    """Euclidean distances (queries x refs); inf where a descriptor is missing."""
    out = np.full((len(queries), len(refs)), np.inf)
    for i, q in enumerate(queries):
        if q is None:
            continue
        for j, r in enumerate(refs):
            if r is not None:
                out[i, j] = float(np.linalg.norm(q - r))
    return out


def rank1(distances: np.ndarray, truth: np.ndarray, persons: int) -> tuple[float, list[float | None]]:
    """Mean over persons of each person's fraction of queries whose nearest reference is theirs.

    A query with no finite distance is a miss; ties go to the first reference,
    so a constant answer scores exactly 1 / persons.
    """
    per_person: list[float | None] = []
    finite = np.isfinite(distances).any(axis=1)
    nearest = np.argmin(distances, axis=1) if distances.size else np.zeros(len(truth), int)
    hits = finite & (nearest == truth)
    for person in range(persons):
        mine = truth == person
        per_person.append(float(hits[mine].mean()) if mine.any() else None)
    scored = [v for v in per_person if v is not None]
    return (float(np.mean(scored)) if scored else float("nan")), per_person


def rank1_pooled(distances: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of all queries whose nearest reference is theirs (not averaged per person; for context)."""
    if not len(truth):
        return float("nan")
    hits = np.isfinite(distances).any(axis=1) & (np.argmin(distances, axis=1) == truth)
    return float(hits.mean())


def rank1_over_references(gallery: Gallery, method: str, ref_method: str,
                          draws: int = REFERENCE_DRAWS, seed: int = 0) -> dict[str, float] | None:
    """Rank-1 (as :func:`rank1`) over random choices of each person's reference photo.

    The audit's headline uses the first photo; this says how much that choice matters:
    the mean and the 5th and 95th percentiles over ``draws`` choices of the gallery's photos.
    """
    persons = gallery.persons
    used = [gallery.references[person] for person in persons] + gallery.queries
    if not gallery.queries:
        return None
    owner = np.array([persons.index(p.person) for p in used])
    # every photo against every photo once; a draw only picks columns
    distances = distance_matrix([p.descriptors.get(method) for p in used],
                                [p.descriptors.get(ref_method) for p in used])
    members = [np.flatnonzero(owner == k) for k in range(len(persons))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        refs = np.array([rng.choice(group) for group in members])
        queries = np.setdiff1d(np.arange(len(used)), refs)
        values.append(rank1(distances[np.ix_(queries, refs)], owner[queries], len(persons))[0])
    array = np.array(values)
    return {"mean": float(np.nanmean(array)), "p5": float(np.nanpercentile(array, 5)),
            "p95": float(np.nanpercentile(array, 95)), "draws": draws}


def genuine_impostor(distances: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genuine (query vs own reference) and impostor (vs all other references) distances."""
    mask = np.zeros_like(distances, dtype=bool)
    mask[np.arange(len(truth)), truth] = True
    return distances[mask], distances[~mask]


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float = FAR_TARGET) -> tuple[float, float, float]:
    """(TAR, achieved FAR, threshold): accept d < threshold with at most ``far`` of impostors accepted."""
    if not len(genuine) or not len(impostor):
        return float("nan"), float("nan"), float("nan")
    ordered = np.sort(impostor)
    allowed = int(math.floor(far * len(ordered)))
    threshold = float(ordered[allowed]) if allowed < len(ordered) else float("inf")
    achieved = float(np.mean(impostor < threshold))
    return float(np.mean(genuine < threshold)), achieved, threshold


def roc_curve(genuine: np.ndarray, impostor: np.ndarray, points: int = 200) -> dict[str, list[float]]:
    """(FAR, TAR) pairs over all thresholds (accept d <= t), thinned to about ``points``."""
    finite = np.concatenate([genuine[np.isfinite(genuine)], impostor[np.isfinite(impostor)]])
    if not len(genuine) or not len(impostor) or not len(finite):
        return {"far": [0.0, 1.0], "tar": [0.0, 0.0], "threshold": [0.0, 0.0]}
    thresholds = np.unique(finite)
    gen, imp = np.sort(genuine), np.sort(impostor)
    tar = np.searchsorted(gen, thresholds, side="right") / len(gen)
    far = np.searchsorted(imp, thresholds, side="right") / len(imp)
    if len(thresholds) > points:
        keep = np.unique(np.linspace(0, len(thresholds) - 1, points).round().astype(int))
        thresholds, tar, far = thresholds[keep], tar[keep], far[keep]
    return {"far": [0.0, *far.round(5).tolist()], "tar": [0.0, *tar.round(5).tolist()],
            "threshold": [0.0, *thresholds.round(4).tolist()]}


def auc(roc: dict[str, list[float]]) -> float:
    """Area under the ROC curve (trapezoids, extended to FAR 1 at the last TAR)."""
    far = np.array([*roc["far"], 1.0])
    tar = np.array([*roc["tar"], roc["tar"][-1]])
    return float(np.sum(np.diff(far) * (tar[1:] + tar[:-1]) / 2))


def evaluate(gallery: Gallery) -> dict[str, Any]:
    """Every re-identification number, per method and per kind of reference."""
    persons = gallery.persons
    truth = np.array([persons.index(q.person) for q in gallery.queries], dtype=int)
    results: dict[str, Any] = {}
    for method in METHODS:
        queries = [q.descriptors.get(method) for q in gallery.queries]
        entry: dict[str, Any] = {"label": METHOD_LABELS[method],
                                 "queries_without_descriptor": sum(q is None for q in queries)}
        for refs_kind, ref_method in (("original_refs", "none"), ("method_refs", method)):
            refs = [gallery.references[p].descriptors.get(ref_method) for p in persons]
            distances = distance_matrix(queries, refs)
            mean, per_person = rank1(distances, truth, len(persons))
            genuine, impostor = genuine_impostor(distances, truth)
            tar, far, threshold = tar_at_far(genuine, impostor)
            roc = roc_curve(genuine, impostor)
            entry[refs_kind] = {
                "rank1": mean,
                "rank1_per_person": dict(zip(persons, per_person, strict=True)),
                "rank1_pooled": rank1_pooled(distances, truth),
                "rank1_over_references": rank1_over_references(gallery, method, ref_method),
                "tar_at_far_0.01": tar,
                "far_achieved": far,
                "threshold": threshold,
                "tar_at_dlib_0.6": float(np.mean(genuine < DLIB_THRESHOLD)) if len(genuine) else None,
                "far_at_dlib_0.6": float(np.mean(impostor < DLIB_THRESHOLD)) if len(impostor) else None,
                "genuine_pairs": int(len(genuine)),
                "impostor_pairs": int(len(impostor)),
                "auc": auc(roc),
                "roc": roc,
            }
        results[method] = entry
    return results

"""Face and eye tracking: camera frame in, 468-point mesh and per-eye geometry out.

MediaPipe's FaceMesh pipeline, with our ONNX models:

1. BlazeFace finds the largest face, only when no face is being followed.
2. A rotation-aligned square around it (1.5x the face box, rotated so the
   eyes are level) is cropped to 192x192 and the mesh model gives 468 3D
   landmarks and a face-presence score.
3. Each eye gets its own rotation-aligned 64x64 crop (2.3x the corner
   distance, the patient's left eye mirrored so both look like a right eye to
   the model) and the iris model gives 71 eye-contour/brow points and
   5 iris points. With ``eye_samples`` > 1 each eye is cropped several times,
   shifted by half a crop pixel, and the model's answers are averaged: the
   iris model's error changes erratically with sub-pixel placement, and the
   average of four half-pixel phases has about a quarter less frame-to-frame
   jitter, at four times the eye model's cost. Files (``track``, ``mask``,
   ``audit``) use :data:`OFFLINE_EYE_SAMPLES`; live consults use one.
4. Everything is mapped back to input pixels, smoothed (One Euro: no lag on
   fast eye movements), the mesh's eyelid points are replaced by the finer
   eye-model contour (MediaPipe's ``refine_landmarks``), and the next frame's
   crop comes from these landmarks.
5. Each eye gets an :class:`EyeQuality`: how large and how fully in the
   picture it is, and whether the pixels agree with the eye model's answer
   (a dark iris inside a lighter fissure where the model put them). The eye
   model has no score of its own and answers "an open eye looking ahead" even
   for a hand or a patch over the eye: :mod:`proxy.tracking.confidence` turns
   these numbers into "measurable or not, and why". They are measured on the
   models' answers before smoothing.

Coordinates are input-image pixels with pixel centres at integers; ``z`` is
depth in the same pixel units (smaller is nearer the camera), relative to the
face centre. "Right" is always the patient's own right, which is on the
image's left in an unmirrored camera picture.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from proxy.resources import model_path
from proxy.tracking.detector import Detection, FaceDetector
from proxy.tracking.onnx import create_session
from proxy.tracking.smoothing import OneEuroFilter

MESH_SIZE = 192
EYE_SIZE = 64
MESH_ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3
PRESENCE_THRESHOLD = 0.5
#: Eye crops per eye for files, where there is no frame budget (live consults use 1).
OFFLINE_EYE_SAMPLES = 4
#: Shift of the extra eye crops along each axis (crop pixels): the half-pixel phases.
EYE_SAMPLE_SHIFT = 0.5

#: Mesh landmark indices of the eye corners (patient's right: outer 33, inner 133).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
#: Mesh landmarks matching the first 16 eye-contour points of the iris model
#: (corner, lower lid, corner, upper lid), as MediaPipe's refine_landmarks uses them.
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: centre, side length and angle (radians).

    The square's x axis points along ``angle`` measured in image coordinates
    (y down), so a level face has angle 0.
    """

    cx: float
    cy: float
    size: float
    angle: float

    def crop_matrix(self, out_size: int, mirror: bool = False) -> np.ndarray:
        """2x3 affine map from crop pixels to image pixels."""
        a = self.size / out_size
        c, s = math.cos(self.angle) * a, math.sin(self.angle) * a
        cu = -c if mirror else c
        su = -s if mirror else s
        half = (out_size - 1) / 2.0
        return np.array(
            [[cu, -s, self.cx - cu * half + s * half], [su, c, self.cy - su * half - c * half]],
            dtype=np.float64,
        )

    def crop(self, image: np.ndarray, out_size: int, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ROI resampled to ``out_size`` squared, and its crop-to-image matrix."""
        matrix = self.crop_matrix(out_size, mirror)
        patch = cv2.warpAffine(image, matrix, (out_size, out_size),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return patch, matrix

    @staticmethod
    def to_image(points: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
        """Map model outputs (crop units, continuous) to image pixels."""
        xy = points[:, :2] - 0.5
        out = np.empty_like(points, dtype=np.float64)
        out[:, :2] = xy @ matrix[:, :2].T + matrix[:, 2]
        scale = math.hypot(matrix[0, 0], matrix[1, 0])
        out[:, 2] = points[:, 2] * scale
        return out


def eye_sample_offsets(samples: int) -> np.ndarray:
    """(samples, 2) shifts of an eye crop's centre (image x, y; in crop pixels), averaging to zero.

    One sample is the plain crop; more lie on a circle through the diagonal
    half-pixel phases ((+-0.5, +-0.5) for four).
    """
    if samples < 1:
        raise ValueError("eye_samples must be at least 1")
    if samples == 1:
        return np.zeros((1, 2))
    angles = math.pi / 4 + 2 * math.pi * np.arange(samples) / samples
    radius = EYE_SAMPLE_SHIFT * math.sqrt(2.0)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _angle(start: np.ndarray, end: np.ndarray) -> float:
    return math.atan2(float(end[1] - start[1]), float(end[0] - start[0]))


def roi_from_detection(detection: Detection) -> Roi:
    """Crop for the mesh model from a detection: eyes level, 1.5x the box."""
    x0, y0, x1, y1 = detection.box
    size = max(x1 - x0, y1 - y0) * MESH_ROI_SCALE
    # keypoint 0 is the patient's right eye (image left), 1 the left eye
    angle = _angle(detection.keypoints[0], detection.keypoints[1])
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, size, angle)


def roi_from_landmarks(landmarks: np.ndarray) -> Roi:
    """Next frame's mesh crop from this frame's mesh, as MediaPipe computes it."""
    angle = _angle(landmarks[RIGHT_EYE_CORNERS[0]], landmarks[LEFT_EYE_CORNERS[0]])
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    centre = (lo + hi) / 2
    # MediaPipe takes the axis-aligned box and rotates the square around its centre
    w, h = hi - lo
    return Roi(float(centre[0]), float(centre[1]), float(max(w, h) * MESH_ROI_SCALE), angle)


def roi_for_eye(landmarks: np.ndarray, corners: tuple[int, int]) -> Roi:
    """Square crop around one eye, 2.3x the corner distance, eye corners level."""
    a, b = landmarks[corners[0], :2], landmarks[corners[1], :2]
    if a[0] > b[0]:
        a, b = b, a
    centre = (a + b) / 2
    size = float(np.hypot(*(b - a))) * EYE_ROI_SCALE
    return Roi(float(centre[0]), float(centre[1]), size, _angle(a, b))


@dataclass(frozen=True)
class EyeQuality:
    """How well one eye was seen in one frame: the inputs of :mod:`proxy.tracking.confidence`.

    Everything is measured on what the models gave and the pixels under it,
    before smoothing.
    """

    width_px: float  #: distance between the eye's corners (input pixels)
    in_frame: float  #: share of the eye's region (lid contour box + a quarter eye width) inside the picture
    texture: float  #: luminance variation (SD over mean) around the lids; about 0 on a hand or a patch
    iris_contrast: float  #: (fissure - iris) / (fissure + iris) mean luminance; about 0 where no iris is seen
    iris_ratio: float  #: iris diameter over eye width (about 0.4 for a real eye)
    spread: float | None  #: RMS disagreement of the iris centre over the eye crops (eye widths); None with one crop


@dataclass
class FaceTrack:
    """Tracking result for one frame, all in input pixels (see module docstring)."""

    landmarks: np.ndarray  #: (468, 3) face mesh
    right_eye: np.ndarray  #: (71, 3) eye contour and brow points of the patient's right eye
    left_eye: np.ndarray  #: (71, 3)
    right_iris: np.ndarray  #: (5, 3) iris centre then 4 points on its rim
    left_iris: np.ndarray  #: (5, 3)
    presence: float  #: face-presence probability of the mesh model
    roi: Roi = field(repr=False)
    right_quality: EyeQuality | None = None  #: None where not measured (tracks built by hand)
    left_quality: EyeQuality | None = None


class FaceTracker:
    """Follows one face (the largest) through a sequence of frames.

    Not thread-safe: one tracker per stream. ``reset()`` forgets the face
    (for example between unrelated photos).
    """

    def __init__(self, threads: int = 1, smoothing: bool = True, eye_samples: int = 1,
                 models_of: FaceTracker | None = None) -> None:
        """``models_of``: another tracker whose models (ONNX sessions, about 50 MB) this one shares; both must be
        used from one thread (the gaze trim's tracker shares its stream's)."""
        if models_of is not None:
            self.detector, self.mesh, self.iris = models_of.detector, models_of.mesh, models_of.iris
        else:
            self.detector = FaceDetector(threads)
            self.mesh = create_session(model_path("face_landmark.onnx"), threads)
            self.iris = create_session(model_path("iris_landmark.onnx"), threads)
        self._mesh_input = self.mesh.get_inputs()[0].name
        self._iris_input = self.iris.get_inputs()[0].name
        # model inputs, reused every frame (RGB in [0, 1], NHWC)
        self._mesh_tensor = np.empty((1, MESH_SIZE, MESH_SIZE, 3), np.float32)
        # every crop of both eyes in one batch: one model call per frame
        self.eye_samples = eye_samples
        self._eye_offsets = eye_sample_offsets(eye_samples)
        self._eye_tensor = np.empty((2 * eye_samples, EYE_SIZE, EYE_SIZE, 3), np.float32)
        self.smoothing = smoothing
        # Eyes: nystagmus up to 8 Hz must pass (see tests/tracking/test_tracker.py); head: steadier.
        self._mesh_filter = OneEuroFilter(min_cutoff=1.0, beta=120.0)
        self._eye_filter = OneEuroFilter(min_cutoff=1.5, beta=300.0)
        self._roi: Roi | None = None
        #: Milliseconds spent in each stage on the last frame (detect, mesh, eyes, smooth).
        self.timings: dict[str, float] = {}

    def reset(self) -> None:
        self._roi = None
        self._mesh_filter.reset()
        self._eye_filter.reset()

    @staticmethod
    def as_rgb(frame: np.ndarray) -> np.ndarray:
        """Accept HxW grayscale, HxWx3 RGB or HxWx4 RGBA uint8 frames."""
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        if frame.ndim == 3 and frame.shape[2] == 4:
            return np.ascontiguousarray(frame[:, :, :3])
        if frame.ndim == 3 and frame.shape[2] == 1:
            return cv2.cvtColor(frame[:, :, 0], cv2.COLOR_GRAY2RGB)
        if frame.ndim == 3 and frame.shape[2] == 3:
            return frame
        raise ValueError(f"unsupported frame shape {frame.shape}")

    def process(self, frame: np.ndarray, t: float | None = None) -> FaceTrack | None:
        """Track one frame (uint8 RGB or grayscale); ``None`` when there is no face.

        ``t`` is the frame's time in seconds, used by the smoothing filter;
        without it frames are not smoothed.
        """
        clock = time.perf_counter
        timings = {"detect": 0.0, "mesh": 0.0, "eyes": 0.0, "smooth": 0.0}
        self.timings = timings
        rgb = self.as_rgb(frame)
        if rgb.shape[0] < 16 or rgb.shape[1] < 16:
            self.reset()
            return None
        result = None
        start = clock()
        if self._roi is not None:
            result = self._run_mesh(rgb, self._roi)
        timings["mesh"] = (clock() - start) * 1000
        if result is None:
            self._roi = None
            self._mesh_filter.reset()
            self._eye_filter.reset()
            start = clock()
            detections = self.detector.detect(rgb)
            timings["detect"] = (clock() - start) * 1000
            if detections:
                start = clock()
                result = self._run_mesh(rgb, roi_from_detection(detections[0]))
                timings["mesh"] += (clock() - start) * 1000
        if result is None:
            self._roi = None
            return None
        landmarks, presence, roi = result
        start = clock()
        if self.smoothing and t is not None:
            landmarks = self._smooth(self._mesh_filter, landmarks, roi.size, t)
        timings["smooth"] = (clock() - start) * 1000
        start = clock()
        track = self._run_eyes(rgb, landmarks, presence, roi)
        timings["eyes"] = (clock() - start) * 1000
        start = clock()
        if self.smoothing and t is not None:
            eyes = np.concatenate([track.right_eye, track.left_eye, track.right_iris, track.left_iris])
            eyes = self._smooth(self._eye_filter, eyes, roi.size, t)
            track.right_eye, track.left_eye = eyes[:71], eyes[71:142]
            track.right_iris, track.left_iris = eyes[142:147], eyes[147:152]
        # The eye model sees the lids at 3x the mesh model's resolution: use its contour.
        track.landmarks[list(RIGHT_EYE_CONTOUR), :2] = track.right_eye[:16, :2]
        track.landmarks[list(LEFT_EYE_CONTOUR), :2] = track.left_eye[:16, :2]
        self._roi = roi_from_landmarks(track.landmarks)
        timings["smooth"] += (clock() - start) * 1000
        return track

    @staticmethod
    def _smooth(filt: OneEuroFilter, points: np.ndarray, scale: float, t: float) -> np.ndarray:
        """Filter in units of the face size so the settings hold at any distance."""
        return filt(points / scale, t) * scale

    def _run_mesh(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float, Roi] | None:
        patch, matrix = roi.crop(rgb, MESH_SIZE)
        tensor = self._mesh_tensor
        np.multiply(patch, 1.0 / 255.0, out=tensor[0], casting="unsafe")
        coords, flag = self.mesh.run(None, {self._mesh_input: tensor})
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[0], -80, 80))))
        if presence < PRESENCE_THRESHOLD:
            return None
        landmarks = Roi.to_image(coords.reshape(468, 3), matrix, MESH_SIZE)
        return landmarks, presence, roi

    def _run_eyes(self, rgb: np.ndarray, landmarks: np.ndarray, presence: float, roi: Roi) -> FaceTrack:
        tensor, offsets = self._eye_tensor, self._eye_offsets
        n = len(offsets)
        matrices = []
        for k, (corners, mirror) in enumerate(((RIGHT_EYE_CORNERS, False), (LEFT_EYE_CORNERS, True))):
            base = roi_for_eye(landmarks, corners)
            pixel = base.size / EYE_SIZE  # image pixels per crop pixel
            for j, (dx, dy) in enumerate(offsets):
                shifted = Roi(base.cx + dx * pixel, base.cy + dy * pixel, base.size, base.angle)
                patch, matrix = shifted.crop(rgb, EYE_SIZE, mirror=mirror)
                np.multiply(patch, 1.0 / 255.0, out=tensor[k * n + j], casting="unsafe")
                matrices.append(matrix)
        contours, irises = self.iris.run(None, {self._iris_input: tensor})
        contours, irises = contours.reshape(2 * n, 71, 3), irises.reshape(2 * n, 5, 3)
        eyes, iris, quality = [], [], []
        for k in range(2):
            crops = range(k * n, (k + 1) * n)
            iris_samples = [Roi.to_image(irises[i], matrices[i], EYE_SIZE) for i in crops]
            eyes.append(sum(Roi.to_image(contours[i], matrices[i], EYE_SIZE) for i in crops) / n)
            iris.append(sum(iris_samples) / n)
            texture, contrast = np.mean([eye_pixels(tensor[i], contours[i], irises[i]) for i in crops], axis=0)
            centres = np.array([sample[0, :2] for sample in iris_samples])
            quality.append(eye_quality(eyes[k], iris[k], rgb.shape[1], rgb.shape[0], float(texture), float(contrast),
                                       centres))
        return FaceTrack(landmarks, eyes[0], eyes[1], iris[0], iris[1], presence, roi, quality[0], quality[1])


#: Luminance weights of RGB (ITU-R BT.601).
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: The iris core whose luminance is compared with the fissure around the iris (share of the iris radius):
#: inside the limbus, clear of its blurred edge.
IRIS_CORE = 0.7
#: Margin of the region whose texture is measured around the lid contour's box (eye widths).
TEXTURE_MARGIN = 0.1
#: Fixed-point bits for sub-pixel polygon and circle drawing.
_SHIFT = 4


def eye_pixels(patch: np.ndarray, contour: np.ndarray, iris: np.ndarray) -> tuple[float, float]:
    """(texture, iris contrast) of one eye crop: do the pixels show the eye the model describes?

    ``patch`` is the model's input (EYE_SIZE squared, RGB in [0, 1]); ``contour`` and ``iris`` are
    the model's outputs for it, in crop units. Texture is the luminance SD over its mean in the lid
    contour's box: lashes, lid margins, sclera and iris make an eye, open or closed, vary; a hand or a
    patch hardly does. Iris contrast is (fissure - iris) / (fissure + iris) mean luminance: a real
    open eye shows a dark iris in a lighter fissure (sclera is lighter than any iris); a closed,
    shadowed or blurred eye does not, whatever the model answers.
    """
    gray = patch @ LUMA
    lids = contour[:16, :2] - 0.5
    margin = TEXTURE_MARGIN * float(np.linalg.norm(lids[0] - lids[8]))
    lo = np.clip(np.floor(lids.min(0) - margin), 0, EYE_SIZE - 1).astype(int)
    hi = np.clip(np.ceil(lids.max(0) + margin), 1, EYE_SIZE).astype(int)
    box = gray[lo[1]:max(hi[1], lo[1] + 1), lo[0]:max(hi[0], lo[0] + 1)]
    texture = float(box.std() / max(float(box.mean()), 1e-3))
    one = 1 << _SHIFT
    fissure = np.zeros((EYE_SIZE, EYE_SIZE), np.uint8)
    cv2.fillPoly(fissure, [np.round(lids * one).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    centre = tuple(int(v) for v in np.round((iris[0, :2] - 0.5) * one))
    radius = float(np.linalg.norm(iris[1:5, :2] - iris[0, :2], axis=1).mean())
    core, limbus = np.zeros_like(fissure), np.zeros_like(fissure)
    cv2.circle(core, centre, int(round(IRIS_CORE * radius * one)), 1, -1, cv2.LINE_8, _SHIFT)
    cv2.circle(limbus, centre, int(round(radius * one)), 1, -1, cv2.LINE_8, _SHIFT)
    inside = (fissure & core).astype(bool)
    around = (fissure & (1 - limbus)).astype(bool)
    if inside.sum() < 3 or around.sum() < 3:
        return texture, 0.0
    iris_mean, fissure_mean = float(gray[inside].mean()), float(gray[around].mean())
    return texture, (fissure_mean - iris_mean) / max(fissure_mean + iris_mean, 1e-6)


def eye_quality(eye: np.ndarray, iris: np.ndarray, width: int, height: int, texture: float, contrast: float,
                centres: np.ndarray) -> EyeQuality:
    """One eye's :class:`EyeQuality` from its (averaged) contour and iris in image pixels.

    ``centres`` are the iris centres of the single crops, for their spread.
    """
    lids = eye[:16, :2]
    eye_width = float(np.linalg.norm(lids[0] - lids[8]))
    grow = 0.25 * eye_width
    lo, hi = lids.min(0) - grow, lids.max(0) + grow
    inside_lo = np.maximum(lo, -0.5)
    inside_hi = np.minimum(hi, np.array([width - 0.5, height - 0.5]))
    area = float(np.prod(hi - lo))
    in_frame = float(np.prod(np.clip(inside_hi - inside_lo, 0.0, None)) / area) if area > 0 else 0.0
    rim = iris[1:5, :2]
    diameter = float((np.linalg.norm(rim[0] - rim[2]) + np.linalg.norm(rim[1] - rim[3])) / 2)
    scale = max(eye_width, 1e-6)
    spread = None
    if len(centres) > 1:
        spread = float(np.sqrt(((centres - centres.mean(0)) ** 2).sum(1).mean()) / scale)
    return EyeQuality(eye_width, in_frame, texture, contrast, diameter / scale, spread)

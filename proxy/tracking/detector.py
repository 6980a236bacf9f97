"""Face detection: MediaPipe's BlazeFace short-range model run with ONNX Runtime.

Runs only when the tracker has no face to follow. Decoding follows
MediaPipe's ``face_detection_short_range`` graph: 896 SSD anchors, sigmoid
scores, and weighted non-maximum suppression.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from proxy.resources import model_path
from proxy.tracking.onnx import create_session

INPUT_SIZE = 128
MIN_SCORE = 0.5
NMS_IOU = 0.3


@dataclass(frozen=True)
class Detection:
    """One detected face, in input-image pixels."""

    score: float
    box: np.ndarray  #: [xmin, ymin, xmax, ymax]
    keypoints: np.ndarray  #: (6, 2): right eye, left eye, nose tip, mouth, right ear, left ear

    @property
    def area(self) -> float:
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))


def ssd_anchors() -> np.ndarray:
    """Anchor centres (896, 2) of the short-range model, in [0, 1] input units."""
    anchors = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = INPUT_SIZE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        anchors.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(anchors).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray) -> list[tuple]:
    """MediaPipe's weighted NMS: overlapping boxes are averaged by score."""
    order = np.argsort(-scores)
    scores, boxes, keypoints = scores[order], boxes[order], keypoints[order]
    remaining = np.arange(len(scores))
    results = []
    while remaining.size:
        top = remaining[0]
        overlap = _iou(boxes[top], boxes[remaining])
        group = remaining[overlap > NMS_IOU]
        group = group if group.size else remaining[:1]
        weights = scores[group][:, None]
        total = weights.sum()
        box = (boxes[group] * weights).sum(0) / total
        kps = (keypoints[group] * weights[:, :, None]).sum(0) / total
        results.append((float(scores[top]), box, kps))
        remaining = remaining[overlap <= NMS_IOU]
    return results


class FaceDetector:
    """Finds faces in a whole frame."""

    def __init__(self, threads: int = 1) -> None:
        self.session = create_session(model_path("face_detection_short_range.onnx"), threads)
        self.input_name = self.session.get_inputs()[0].name
        self.anchors = ssd_anchors()
        self._tensor = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """All faces above the score threshold, largest first."""
        height, width = rgb.shape[:2]
        scale = INPUT_SIZE / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        pad_x, pad_y = (INPUT_SIZE - new_w) // 2, (INPUT_SIZE - new_h) // 2
        resized = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
        tensor = self._tensor
        tensor.fill(0.0)
        tensor[0, pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized * (2.0 / 255.0) - 1.0
        regressors, logits = self.session.run(None, {self.input_name: tensor})
        raw = regressors[0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0].astype(np.float64), -100.0, 100.0)))
        keep = scores >= MIN_SCORE
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep]
        centre = raw[:, 0:2] / INPUT_SIZE + anchors
        size = raw[:, 2:4] / INPUT_SIZE
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) / INPUT_SIZE + anchors[:, None, :]
        offset = np.array([pad_x, pad_y], np.float32)
        detections = []
        for score, box, kps in weighted_nms(scores, boxes, keypoints):
            box_px = ((box.reshape(2, 2) * INPUT_SIZE - offset) / scale).reshape(4)
            kps_px = (kps * INPUT_SIZE - offset) / scale
            detections.append(Detection(score, box_px, kps_px))
        detections.sort(key=lambda d: d.area, reverse=True)
        return detections

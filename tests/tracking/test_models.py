"""The shipped ONNX models compute what MediaPipe's TFLite models compute."""

from __future__ import annotations

import glob
import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from models.convert import MODELS

ROOT = Path(__file__).resolve().parents[2]


def mediapipe_wheel() -> Path:
    candidates = [os.environ.get("MASKPROXY_MEDIAPIPE_WHEEL", "")]
    candidates += glob.glob(str(ROOT / ".cache" / "wheels" / "mediapipe-0.10.21-*.whl"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    pytest.skip("mediapipe 0.10.21 wheel not found: scripts/test.sh downloads it to .cache/wheels")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_matches_litert(name: str, face_photo: np.ndarray) -> None:
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    data = zipfile.ZipFile(mediapipe_wheel()).read(MODELS[name])
    interpreter = interpreter_module.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    session = ort.InferenceSession(str(ROOT / "models" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    detail = interpreter.get_input_details()[0]
    height, width = detail["shape"][1:3]
    rng = np.random.default_rng(7)
    real = cv2.resize(face_photo, (width, height)).astype(np.float32) / 255.0
    inputs = [rng.uniform(-1, 1, detail["shape"]).astype(np.float32),
              rng.uniform(0, 1, detail["shape"]).astype(np.float32), real[None]]
    for tensor in inputs:
        interpreter.set_tensor(detail["index"], tensor)
        interpreter.invoke()
        expected = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {detail["name"]: tensor}),
                       strict=True))
        assert set(expected) == set(got)
        for key, ref in expected.items():
            assert got[key].shape == ref.shape
            span = max(float(ref.max() - ref.min()), 1.0)
            assert float(np.abs(got[key] - ref).max()) <= 1e-3 * span, key


def test_template_is_symmetric_and_closed_over_topology() -> None:
    from proxy.avatar.template import load_template

    template = load_template()
    assert template.vertices.shape == (468, 3)
    mirrored = template.vertices[template.mirror] * np.array([-1, 1, 1])
    assert np.abs(mirrored - template.vertices).max() < 1e-3
    assert template.triangles.max() < 468 and len(template.triangles) > 800
    assert abs(np.linalg.norm(template.vertices[33] - template.vertices[263]) - 9.0) < 1e-3

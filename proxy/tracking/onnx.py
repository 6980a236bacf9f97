"""ONNX Runtime sessions: one place that picks providers and threading."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


def available_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA first when this onnxruntime build and machine have it, else CPU."""
    available = ort.get_available_providers()
    providers = []
    if prefer_gpu and "CUDAExecutionProvider" in available:
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


def create_session(path: Path, threads: int = 1, prefer_gpu: bool = True) -> ort.InferenceSession:
    """An inference session tuned for small models run once per video frame.

    One intra-op thread by default: a consult is one stream, and the
    proxy scales by running consults side by side, not by splitting a frame.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=available_providers(prefer_gpu))

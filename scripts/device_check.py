"""GPU path check: NVIDIA EGL rendering and onnxruntime's CUDA provider give the same outputs as the CPU path.

Run on a machine with an NVIDIA GPU (the project's device check)::

    python scripts/device_check.py [--reference ref.npz] [--out result.json]

It renders a short sequence of avatar frames (no real face data is needed),
tracks them with every available ONNX Runtime provider, compares the
providers' landmarks and, given a reference rendered on Mesa llvmpipe
(``--make-reference`` on a CPU machine), the pixels; and prints timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.avatar.renderer import AvatarRenderer  # noqa: E402
from proxy.params import MaskParams  # noqa: E402


def sequence(count: int = 60) -> list[MaskParams]:
    out = []
    for i in range(count):
        t = i / 30
        out.append(MaskParams(frame=i, t=t, face=True, head_yaw=20 * np.sin(t * 2), head_pitch=6 * np.sin(t * 3),
                              head_roll=5 * np.sin(t), right_gaze_yaw=15 * np.sin(t * 5),
                              left_gaze_yaw=15 * np.sin(t * 5) - 8, right_aperture=0.3 + 0.05 * np.sin(t * 7)))
    return out


def render_all(params: list[MaskParams]) -> tuple[list[np.ndarray], float, str]:
    with AvatarRenderer(640, 480) as renderer:
        renderer.render(params[0])
        start = time.perf_counter()
        frames = [renderer.render(p) for p in params]
        ms = (time.perf_counter() - start) * 1000 / len(params)
        with renderer.ctx:  # current, so the driver's strings can be read
            info = renderer.ctx.info
        name = f"{info.get('GL_VENDOR', '')} {info.get('GL_RENDERER', '')}".strip()
    return frames, ms, name


def track_all(frames: list[np.ndarray], providers: list[str]) -> tuple[np.ndarray, float]:
    import onnxruntime as ort

    from proxy.tracking import onnx as onnx_module
    from proxy.tracking.tracker import FaceTracker

    original = onnx_module.available_providers
    onnx_module.available_providers = lambda prefer_gpu=True: providers  # type: ignore[assignment]
    try:
        tracker = FaceTracker(smoothing=False)
    finally:
        onnx_module.available_providers = original
    assert tracker.mesh.get_providers()[0] == providers[0], tracker.mesh.get_providers()
    tracker.process(frames[0], 0.0)
    results, start = [], time.perf_counter()
    for i, frame in enumerate(frames):
        track = tracker.process(frame, i / 30)
        results.append(np.full((478, 3), np.nan) if track is None else
                       np.concatenate([track.landmarks, track.right_iris, track.left_iris]))
    ms = (time.perf_counter() - start) * 1000 / len(frames)
    del ort
    return np.stack(results), ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, help="frames rendered on llvmpipe (.npz)")
    parser.add_argument("--make-reference", type=Path, help="render the reference here and exit")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    params = sequence()
    frames, render_ms, renderer_name = render_all(params)
    if args.make_reference:
        np.savez_compressed(args.make_reference, frames=np.stack(frames[::10]))
        print(f"reference written: {args.make_reference}")
        return 0
    import onnxruntime as ort

    report: dict[str, object] = {"renderer": renderer_name, "render_ms": round(render_ms, 3),
                                 "onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
    if args.reference and args.reference.exists():
        reference = np.load(args.reference)["frames"].astype(np.int16)
        diff = np.abs(np.stack(frames[::10]).astype(np.int16) - reference)
        report["render_vs_llvmpipe"] = {"mean_abs": round(float(diff.mean()), 3),
                                        "p99_abs": float(np.percentile(diff, 99)), "max_abs": int(diff.max())}
    cpu, cpu_ms = track_all(frames, ["CPUExecutionProvider"])
    report["track_ms_cpu"] = round(cpu_ms, 3)
    report["faces_found"] = int(np.isfinite(cpu[:, 0, 0]).sum())
    if "CUDAExecutionProvider" in ort.get_available_providers():
        gpu, gpu_ms = track_all(frames, ["CUDAExecutionProvider", "CPUExecutionProvider"])
        both = np.isfinite(cpu[:, 0, 0]) & np.isfinite(gpu[:, 0, 0])
        report["track_ms_cuda"] = round(gpu_ms, 3)
        report["cuda_vs_cpu_landmarks_px"] = {"max": round(float(np.abs(gpu[both] - cpu[both]).max()), 4),
                                              "mean": round(float(np.abs(gpu[both] - cpu[both]).mean()), 5)}
    else:
        report["cuda"] = "onnxruntime on this machine has no CUDAExecutionProvider"
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

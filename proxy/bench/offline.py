"""``maskproxy bench``: how fast is masking, stage by stage, against what any proxy pays.

It runs the pipeline as the live proxy does over a clip first encoded as a
browser would send it (aiortc's VP8 decode -> track -> retarget -> render and
read back -> I420 -> the consult's shared VP8 encode), beside aiortc's own VP8
encoder on the same avatar frames (what every sender used to run; decoded, the
two are compared by PSNR), and
two baselines in the same run: passthrough (decode -> encode: the floor) and
blur (face detector -> Gaussian blur of the face box -> encode). Optionally
MediaPipe's FaceMesh on the same frames, in its own interpreter (mediapipe
pins numpy<2, so it lives in a separate virtual environment).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from proxy.bench.clips import default_clip, load_frames, parse_size, synthetic_clip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", type=Path, help="video to run (default: a clip from ../shared/data/videos, "
                        "else a synthetic one)")
    parser.add_argument("--size", default="640x480", help="frame size WxH the clip is scaled to (default 640x480)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of video to process per run (30 fps)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime and OpenCV threads (default 1)")
    parser.add_argument("--json", action="store_true", help="end with one JSON object holding every figure")
    parser.add_argument("--no-baselines", action="store_true", help="skip the passthrough and blur baselines")
    parser.add_argument("--live", action="store_true",
                        help="run consults through a real 'maskproxy serve' with aiortc clients on loopback")
    parser.add_argument("--consults", type=int, default=1, help="with --live: consults at once (default 1)")
    parser.add_argument("--server-cpus", help="with --live: pin the proxy to these CPUs, e.g. 0 or 0-1")
    parser.add_argument("--client-cpus", help="with --live: pin the clients to these CPUs")
    parser.add_argument("--profile", action="store_true",
                        help="with --live: profile the proxy with py-spy (if installed) and split the event loop's "
                        "cost by part")
    parser.add_argument("--cluster", action="store_true",
                        help="with --live: run each consult as a Ray actor on a local cluster of one media node per "
                        "consult plus a spare, and time the recovery from a node's death (needs the cluster extra)")
    parser.add_argument("--mediapipe-python", default=os.environ.get("MASKPROXY_MEDIAPIPE_PYTHON"),
                        help="python interpreter with mediapipe==0.10.21, for the FaceMesh baseline "
                        "(or set MASKPROXY_MEDIAPIPE_PYTHON)")


def camera_stream(frames: list[av.VideoFrame]) -> list[Any]:
    """The frames as a browser sends them: VP8 at WebRTC's rate control, as aiortc receives them."""
    from aiortc.codecs.vpx import vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    encoder = Encoder()
    stream = []
    for index, frame in enumerate(frames):
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        payloads, timestamp = encoder.encoder.encode(frame)
        stream.append(JitterFrame(b"".join(vp8_depayload(p) for p in payloads), timestamp))
    return stream


def percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values) if values else np.zeros(1)
    return {"p50": round(float(np.percentile(array, 50)), 3), "p95": round(float(np.percentile(array, 95)), 3)}


class Encoder:
    """aiortc's VP8 encoder, as a sender that encodes for itself runs it (the relayed doctor's camera, the
    passthrough floor; before issue 20, the masked stream too, once per receiver)."""

    def __init__(self) -> None:
        from aiortc.codecs import get_encoder
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        self.encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
        self.pts = 0

    def encode(self, frame: av.VideoFrame) -> int:
        frame.pts = self.pts
        frame.time_base = Fraction(1, 90000)
        self.pts += 3000
        payloads, _ = self.encoder.encode(frame)
        return sum(len(p) for p in payloads)


def _decoder() -> Any:
    from aiortc.codecs.vpx import Vp8Decoder

    return Vp8Decoder()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * float(np.log10(255**2 / mse))


class EncodeComparison:
    """aiortc's VP8 encoder (today's path before the shared stream) beside the shared one, on the same frames:
    its time, and both outputs decoded, against each other and against the rendered picture."""

    def __init__(self) -> None:
        self.aiortc = Encoder()
        self.decoders = (_decoder(), _decoder())
        self.ms: list[float] = []
        self.to_aiortc: list[float] = []
        self.to_render: tuple[list[float], list[float]] = ([], [])
        self.wall = self.cpu = 0.0  #: seconds the comparison took (not part of the pipeline's figures)

    def add(self, rendered: np.ndarray, shared: bytes, frame: av.VideoFrame, index: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            self._add(rendered, shared, frame, index)
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu

    def _add(self, rendered: np.ndarray, shared: bytes, frame: av.VideoFrame, index: int) -> None:
        from aiortc.codecs.vpx import vp8_depayload
        from aiortc.jitterbuffer import JitterFrame

        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        start = time.perf_counter()
        payloads, _ = self.aiortc.encoder.encode(frame)
        self.ms.append((time.perf_counter() - start) * 1000)
        old = b"".join(vp8_depayload(p) for p in payloads)
        pictures = [[f.to_ndarray(format="rgb24") for f in decoder.decode(JitterFrame(data, index * 3000))]
                    for decoder, data in zip(self.decoders, (shared, old), strict=True)]
        if index >= 10 and all(pictures):  # both encoders' rate control settles after the first keyframe
            new_picture, old_picture = pictures[0][0], pictures[1][0]
            self.to_aiortc.append(psnr(new_picture, old_picture))
            self.to_render[0].append(psnr(new_picture, rendered))
            self.to_render[1].append(psnr(old_picture, rendered))

    def report(self) -> dict[str, Any]:
        if not self.to_aiortc:
            return {}
        return {"aiortc_encode": percentiles(self.ms),
                "psnr_vs_aiortc_db": {"mean": round(float(np.mean(self.to_aiortc)), 2),
                                      "min": round(float(np.min(self.to_aiortc)), 2)},
                "psnr_vs_render_db": {"shared": round(float(np.mean(self.to_render[0])), 2),
                                      "aiortc": round(float(np.mean(self.to_render[1])), 2)}}


def run_pipeline(stream: list[Any], size: tuple[int, int], threads: int) -> dict[str, Any]:
    """Decode -> track -> retarget -> render and read back -> I420 -> VP8, as a consult's worker does."""
    from proxy.consult.config import Config
    from proxy.consult.encoding import VideoEncoder
    from proxy.consult.worker import frame_to_rgb, rgb_to_frame
    from proxy.pipeline import MaskPipeline

    width, height = size
    stages: dict[str, list[float]] = defaultdict(list)
    encoder, decoder = VideoEncoder(), _decoder()
    comparison = EncodeComparison()
    faces = 0
    clock = time.perf_counter
    with MaskPipeline(threads=threads, rgba=True, trim_every=Config.trim_every) as pipeline:
        for index, packet in enumerate(stream[:10]):  # warm-up: sessions, GL context and codecs allocate on first use
            for frame in decoder.decode(packet):
                out = rgb_to_frame(pipeline.process(frame.to_ndarray(format="rgb24"), 0.0, 0)[1])
                out.pts, out.time_base = index * 3000, Fraction(1, 90000)
                encoder.encode(out)
        pipeline.reset()
        decoder, encoder = _decoder(), VideoEncoder()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = clock()
        count = 0
        for index, packet in enumerate(stream):
            start = clock()
            for frame in decoder.decode(packet):
                rgb = frame_to_rgb(frame, width, height)
                decoded = clock()
                params = pipeline.track(rgb, index / 30, index)
                out = pipeline.render(params, width, height)
                converted_start = clock()
                out_frame = rgb_to_frame(out)
                out_frame.pts, out_frame.time_base = index * 3000, Fraction(1, 90000)
                encode_start = clock()
                data, _, _ = encoder.encode(out_frame, keyframe=index == 0)
                end = clock()
                comparison.add(out[:, :, :3], data, rgb_to_frame(out), index)
                faces += params.face
                count += 1
                stages["decode"].append((decoded - start) * 1000)
                for key, value in pipeline.timings.items():
                    stages[key].append(value)
                stages["to_i420"].append((encode_start - converted_start) * 1000)
                stages["encode"].append((end - encode_start) * 1000)
                stages["total"].append((end - start) * 1000)
        wall = clock() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    # the comparison ran inside the timed loop: its own time is taken off the totals
    wall -= comparison.wall
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime) - comparison.cpu
    return {
        "encode_comparison": comparison.report(),
        "fps": round(count / wall, 2),
        "ms_per_frame": round(wall * 1000 / count, 3),
        "cpu_ms_per_frame": round(cpu * 1000 / count, 3),
        "face_rate": round(faces / count, 3),
        "stages": {k: percentiles(v) for k, v in stages.items()},
    }


def run_tracker_alone(stream: list[Any], threads: int, eye_samples: int = 1) -> dict[str, Any]:
    """The tracker by itself on the same frames (tracking mode, as MediaPipe's FaceMesh is timed)."""
    from proxy.tracking.tracker import FaceTracker

    decoder = _decoder()
    frames = [frame.to_ndarray(format="rgb24") for packet in stream for frame in decoder.decode(packet)]
    tracker = FaceTracker(threads=threads, eye_samples=eye_samples)
    for index, rgb in enumerate(frames[:10]):
        tracker.process(rgb, index / 30)
    stages: dict[str, list[float]] = defaultdict(list)
    start = time.perf_counter()
    for index, rgb in enumerate(frames):
        began = time.perf_counter()
        tracker.process(rgb, (index + 10) / 30)
        stages["total"].append((time.perf_counter() - began) * 1000)
        for key, value in tracker.timings.items():
            stages[key].append(value)
    return {"ms_per_frame": round((time.perf_counter() - start) * 1000 / len(frames), 3),
            "stages": {k: percentiles(v) for k, v in stages.items()}}


def run_passthrough(stream: list[Any]) -> float:
    """The floor: decode the camera's VP8 and encode it again."""
    encoder, decoder = Encoder(), _decoder()
    for packet in stream[:10]:
        for frame in decoder.decode(packet):
            encoder.encode(frame)
    decoder = _decoder()
    start = time.perf_counter()
    count = 0
    for packet in stream:
        for frame in decoder.decode(packet):
            encoder.encode(frame)
            count += 1
    return (time.perf_counter() - start) * 1000 / max(count, 1)


def run_blur(stream: list[Any], size: tuple[int, int], threads: int) -> float:
    """deface-style anonymisation: detect on every frame, blur each face box, encode."""
    from proxy.consult.worker import rgb_to_frame
    from proxy.tracking.detector import FaceDetector

    width, height = size
    detector = FaceDetector(threads)
    encoder, decoder = Encoder(), _decoder()

    def one(packet: Any) -> int:
        done = 0
        for frame in decoder.decode(packet):
            rgb = frame.to_ndarray(format="rgb24")
            for detection in detector.detect(rgb):
                x0, y0, x1, y1 = detection.box
                cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.65
                a, b = max(0, int(cx - half)), max(0, int(cy - half))
                c, d = min(width, int(cx + half)), min(height, int(cy + half))
                if c - a > 8 and d - b > 8:
                    # a strong Gaussian blur, done at 1/8 scale as fast anonymisers do
                    region = rgb[b:d, a:c]
                    small = cv2.resize(region, ((c - a) // 8, (d - b) // 8), interpolation=cv2.INTER_AREA)
                    small = cv2.GaussianBlur(small, (0, 0), sigmaX=2.0)
                    rgb[b:d, a:c] = cv2.resize(small, (c - a, d - b), interpolation=cv2.INTER_LINEAR)
            encoder.encode(rgb_to_frame(rgb))
            done += 1
        return done

    for packet in stream[:10]:
        one(packet)
    decoder = _decoder()
    start = time.perf_counter()
    count = sum(one(packet) for packet in stream)
    return (time.perf_counter() - start) * 1000 / max(count, 1)


MEDIAPIPE_SCRIPT = r"""
import json, sys, time
import cv2, mediapipe as mp
clip, width, height, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
frames = []
while len(frames) < count:
    cap = cv2.VideoCapture(clip)
    while len(frames) < count:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(cv2.resize(bgr, (width, height)), cv2.COLOR_BGR2RGB))
mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1)
for f in frames[:10]:
    mesh.process(f)
start = time.perf_counter(); found = 0
for f in frames:
    found += mesh.process(f).multi_face_landmarks is not None
elapsed = time.perf_counter() - start
print(json.dumps({"ms_per_frame": elapsed * 1000 / len(frames), "face_rate": found / len(frames)}))
"""


def run_mediapipe(python: str, clip: Path, size: tuple[int, int], count: int) -> dict[str, float] | str:
    try:
        command = [python, "-c", MEDIAPIPE_SCRIPT, str(clip), str(size[0]), str(size[1]), str(count)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "GLOG_minloglevel": "2"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"not run ({exc.__class__.__name__})"
    if done.returncode != 0:
        return "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_bench(args: argparse.Namespace) -> int:
    from proxy.avatar.renderer import OFFLINE_SUPERSAMPLE
    from proxy.avatar.renderer import benchmark as render_benchmark
    from proxy.tracking.tracker import OFFLINE_EYE_SAMPLES

    cv2.setNumThreads(args.threads)
    size = parse_size(args.size)
    clip = args.clip or default_clip()
    if clip is None:
        clip = synthetic_clip(Path(os.environ.get("TMPDIR", "/tmp")) / "maskproxy-bench-synthetic.mp4")
        print(f"no ../shared/data/videos: using a synthetic clip of the avatar ({clip})", file=sys.stderr)
    if args.live:
        from proxy.bench.live import run_live

        report = run_live(args, clip, size)
        if args.json:
            print(json.dumps(report))
        return 0
    count = max(30, int(args.seconds * 30))
    stream = camera_stream(load_frames(clip, size, count))
    report: dict[str, Any] = {"clip": str(clip), "size": f"{size[0]}x{size[1]}", "threads": args.threads,
                              "frames": count}
    report.update(run_pipeline(stream, size, args.threads))
    report["tracker_alone"] = run_tracker_alone(stream, args.threads)
    # what files (track, mask, audit) pay for their averaged eye crops
    report["tracker_alone_files"] = run_tracker_alone(stream, args.threads, OFFLINE_EYE_SAMPLES)
    # and for their supersampled avatar (the live render is the pipeline's "render" stage)
    report["render_files_ms_per_frame"] = round(render_benchmark(*size, frames=60, supersample=OFFLINE_SUPERSAMPLE), 3)
    if not args.no_baselines:
        report["passthrough_ms_per_frame"] = round(run_passthrough(stream), 3)
        report["blur_ms_per_frame"] = round(run_blur(stream, size, args.threads), 3)
    if args.mediapipe_python:
        report["mediapipe_facemesh"] = run_mediapipe(args.mediapipe_python, clip, size, count)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    print(f"clip {report['clip']}  size {report['size']}  threads {args.threads}  frames {count}")
    print(f"{'stage':<16}{'p50 ms':>10}{'p95 ms':>10}")
    for name, value in report["stages"].items():
        print(f"{name:<16}{value['p50']:>10.3f}{value['p95']:>10.3f}")
    print(f"sustained {report['fps']:.1f} fps, {report['ms_per_frame']:.2f} ms/frame, "
          f"{report['cpu_ms_per_frame']:.2f} CPU ms/frame, face found on {report['face_rate']:.0%}")
    alone = report["tracker_alone"]
    print("tracker alone (tracking mode): " + ", ".join(
        f"{k} {v['p50']:.2f}" for k, v in alone["stages"].items()) + f" ms p50; {alone['ms_per_frame']:.2f} ms/frame")
    files = report["tracker_alone_files"]
    print(f"tracker for files ({OFFLINE_EYE_SAMPLES} eye crops per eye): "
          f"eyes {files['stages']['eyes']['p50']:.2f} ms p50; {files['ms_per_frame']:.2f} ms/frame")
    print(f"render for files ({OFFLINE_SUPERSAMPLE}x supersampled): {report['render_files_ms_per_frame']:.2f} ms/frame")
    compared = report.get("encode_comparison")
    if compared:
        print(f"encode: shared {report['stages']['encode']['p50']:.2f} ms p50, aiortc's own encoder "
              f"{compared['aiortc_encode']['p50']:.2f} ms; decoded, the shared stream is "
              f"{compared['psnr_vs_aiortc_db']['mean']:.1f} dB (min {compared['psnr_vs_aiortc_db']['min']:.1f}) from "
              f"aiortc's, and {compared['psnr_vs_render_db']['shared']:.1f} dB from the rendered picture "
              f"(aiortc's {compared['psnr_vs_render_db']['aiortc']:.1f})")
    if "passthrough_ms_per_frame" in report:
        ratio = report["ms_per_frame"] / max(report["passthrough_ms_per_frame"], 1e-6)
        print(f"passthrough {report['passthrough_ms_per_frame']:.2f} ms/frame (mask is {ratio:.1f}x), "
              f"blur {report['blur_ms_per_frame']:.2f} ms/frame")
    if "mediapipe_facemesh" in report:
        mp = report["mediapipe_facemesh"]
        if isinstance(mp, dict):
            ours = report["tracker_alone"]["ms_per_frame"]
            print(f"MediaPipe FaceMesh (refine_landmarks) {mp['ms_per_frame']:.2f} ms/frame; our tracker alone "
                  f"{ours:.2f} ms/frame ({ours / mp['ms_per_frame']:.2f}x)")
        else:
            print(f"MediaPipe FaceMesh: {mp}")
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB")
    if args.json:
        print(json.dumps(report))
    return 0

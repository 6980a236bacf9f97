"""How the patient's camera bitrate moves the eye signals: tracking a VP8 stream against tracking the clip itself.

``python scripts/camera_bitrate.py [--clips d6,d18,s20] [--kbps 300,600,1000,1500,2500]`` encodes the first
10 s of each clip at 640x480 and 30 fps with real-time VP8 as aiortc configures it (CBR, no lag), decodes it, tracks
both with the live settings (one eye crop), and prints per bitrate the mean absolute difference of each
eye's gaze (degrees), of the vergence (right minus left gaze yaw) with its bias, and of the apertures
(eye widths). The clip itself (H.264 at its own bitrate) is the reference: the figures are what the
camera's compression adds on top of it, the part a clinic can change (bandwidth, camera settings).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np

from proxy.bench.clips import load_frames
from proxy.consult.encoding import VideoEncoder
from proxy.consult.tracks import VIDEO_TIME_BASE
from proxy.pipeline import MaskPipeline

#: libvpx speed of the camera's encoder (aiortc's; the proxy's own masked stream runs faster, at -10).
CAMERA_CPU_USED = -6
FIELDS = ("right_gaze_yaw", "left_gaze_yaw", "right_gaze_pitch", "left_gaze_pitch", "right_aperture", "left_aperture")


def through_vp8(frames: list[np.ndarray], bitrate: int) -> tuple[list[np.ndarray], float]:
    """The frames after a real-time VP8 encode at ``bitrate`` and a decode; and the kbit/s actually sent.

    The encoder is the proxy's own (aiortc's real-time settings) at aiortc's speed, -6: keyframes only
    at the start, as a browser's camera stream has them.
    """
    encoder = VideoEncoder(bitrate=bitrate, cpu_used=CAMERA_CPU_USED)
    decoder = av.CodecContext.create("libvpx", "r")
    out, sent = [], 0
    for index, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index * 3000, VIDEO_TIME_BASE
        data, _, _ = encoder.encode(frame)
        sent += len(data)
        decoded = [d.to_ndarray(format="rgb24") for d in decoder.decode(av.Packet(data))] if data else []
        out.append(decoded[-1] if decoded else out[-1])  # a frame the encoder dropped: the last one stays shown
    return out, sent * 8 / (len(frames) / 30) / 1000


def track(frames: list[np.ndarray]) -> np.ndarray:
    """(frames, FIELDS) as the live pipeline reads them; NaN where an eye was not measured."""
    rows = []
    with MaskPipeline() as pipeline:
        for index, rgb in enumerate(frames):
            params = pipeline.track(rgb, index / 30, index)
            rows.append([np.nan if getattr(params, name) is None else getattr(params, name) for name in FIELDS])
    return np.array(rows, float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default="d6,d18,s20", help="clip names in ../shared/data/videos")
    parser.add_argument("--kbps", default="300,600,1000,1500,2500", help="camera bitrates to try")
    parser.add_argument("--videos", type=Path, default=Path(__file__).resolve().parents[1] / "../shared/data/videos")
    args = parser.parse_args()
    for clip in args.clips.split(","):
        frames = [f.to_ndarray(format="rgb24") for f in load_frames(args.videos / f"{clip}.mp4", (640, 480), 300)]
        reference = track(frames)
        for kbps in (int(k) for k in args.kbps.split(",")):
            decoded, sent = through_vp8(frames, kbps * 1000)
            got = track(decoded)
            error = np.abs(got - reference)
            vergence = (got[:, 0] - got[:, 1]) - (reference[:, 0] - reference[:, 1])
            print(f"{clip} {kbps:5d} kbit/s (sent {sent:5.0f}): gaze yaw R/L {np.nanmean(error[:, 0]):.2f}/"
                  f"{np.nanmean(error[:, 1]):.2f} deg, pitch {np.nanmean(error[:, 2]):.2f}/"
                  f"{np.nanmean(error[:, 3]):.2f}; "
                  f"vergence {np.nanmean(np.abs(vergence)):.2f} (bias {np.nanmean(vergence):+.2f}); aperture "
                  f"{np.nanmean(error[:, 4]):.3f}/{np.nanmean(error[:, 5]):.3f}", flush=True)


if __name__ == "__main__":
    main()

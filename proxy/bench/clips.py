"""Clips for the benchmarks: the shared test clip, a synthetic one, and their frames at a size."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from proxy.resources import ROOT

DEFAULT_CLIPS = ROOT.parent / "shared" / "data" / "videos"


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"maskproxy bench: --size must look like 640x480, not {text!r}") from None
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise SystemExit("maskproxy bench: --size out of range")
    return width, height


def default_clip() -> Path | None:
    for name in ("d6.mp4", "d3.mp4"):
        if (DEFAULT_CLIPS / name).exists():
            return DEFAULT_CLIPS / name
    clips = sorted(DEFAULT_CLIPS.glob("*.mp4")) if DEFAULT_CLIPS.exists() else []
    return clips[0] if clips else None


def synthetic_clip(path: Path, seconds: float = 4.0) -> Path:
    """A clip of the avatar itself moving its head and eyes: a face without real data."""
    from proxy.avatar.renderer import AvatarRenderer
    from proxy.params import MaskParams

    with av.open(str(path), "w") as container, AvatarRenderer(640, 480) as renderer:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for i in range(int(seconds * 30)):
            t = i / 30
            params = MaskParams(frame=i, t=t, face=True, head_yaw=15 * np.sin(t), head_pitch=5 * np.sin(0.7 * t),
                                right_gaze_yaw=20 * np.sin(2 * t), left_gaze_yaw=20 * np.sin(2 * t))
            frame = av.VideoFrame.from_ndarray(renderer.render(params), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def load_frames(clip: Path, size: tuple[int, int], count: int) -> list[av.VideoFrame]:
    """The clip's frames at ``size`` (I420), looped to ``count``."""
    frames: list[av.VideoFrame] = []
    while len(frames) < count:
        with av.open(str(clip)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.reformat(size[0], size[1], format="yuv420p"))
                if len(frames) >= count:
                    break
        if not frames:
            raise SystemExit(f"maskproxy bench: {clip} has no video frames")
    return frames

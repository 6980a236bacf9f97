"""Shared parts of the browser tests: Chromium with a fake camera playing a real clip, and page helpers.

Debian's Chromium (``/usr/bin/chromium``), driven by Playwright for Python. The fake camera plays a Y4M
clip made from the shared clips (d6, else d3) or, without them, a synthetic face drawn by the avatar
renderer (recoloured, on a patterned background, so that it still differs from the proxy's output).
The fixtures that launch it are in ``tests/consult/conftest.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from tests.conftest import SHARED

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT, FPS = 640, 480, 30
CLIP_SECONDS = 12
THUMB = (32, 24)  #: grayscale thumbnails for "is this the camera picture?" comparisons
CONNECT_TIMEOUT_S = 40.0

ARGS = [
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]


# ---- the fake camera -----------------------------------------------------------------------------------


def fit_frame(rgb: np.ndarray) -> np.ndarray:
    """Letterbox a frame to WIDTH x HEIGHT without distorting the face."""
    h, w = rgb.shape[:2]
    scale = min(WIDTH / w, HEIGHT / h)
    nw, nh = int(round(w * scale)), int(round(h * scale))
    out = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    x, y = (WIDTH - nw) // 2, (HEIGHT - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def clip_frames(count: int) -> tuple[list[np.ndarray], str]:
    """Camera frames from the shared clips (d6, else d3), looped to ``count``; else synthetic ones."""
    videos = SHARED / "videos"
    for name in ("d6.mp4", "d3.mp4"):
        path = videos / name
        if not path.exists():
            continue
        frames: list[np.ndarray] = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(fit_frame(frame.to_ndarray(format="rgb24")))
                if len(frames) >= count:
                    break
        if frames:
            return [frames[i % len(frames)] for i in range(count)], str(path)
    return synthetic_frames(count), "synthetic (avatar renderer; shared clips not found)"


def synthetic_frames(count: int) -> list[np.ndarray]:
    """A moving face drawn by the avatar renderer, recoloured and on a pattern unlike the proxy's output."""
    from proxy.avatar.renderer import AvatarRenderer
    from proxy.params import MaskParams

    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    pattern = ((xx // 40 + yy // 40) % 2 * 120 + 60).astype(np.uint8)
    background = np.dstack([pattern, 255 - pattern, np.full_like(pattern, 200)])
    frames = []
    with AvatarRenderer(WIDTH, HEIGHT) as renderer:
        empty = renderer.render(MaskParams(face=True, head_scale=0.0001))
        for i in range(count):
            t = i / FPS
            params = MaskParams(face=True, frame=i, t=t, head_yaw=12 * np.sin(0.9 * t),
                                head_pitch=6 * np.sin(0.6 * t), head_x=0.5 + 0.08 * np.sin(0.5 * t),
                                head_scale=0.26, right_gaze_yaw=15 * np.sin(2.1 * t),
                                left_gaze_yaw=15 * np.sin(2.1 * t), right_gaze_pitch=8 * np.cos(1.3 * t),
                                left_gaze_pitch=8 * np.cos(1.3 * t))
            rgb = renderer.render(params)
            face = np.any(np.abs(rgb.astype(np.int16) - empty) > 6, axis=2)
            frame = background.copy()
            frame[face] = rgb[face][:, ::-1]  # swap red and blue: a different skin, still a face
            frames.append(frame)
    return frames


def write_y4m(path: Path, frames: list[np.ndarray]) -> None:
    """A Y4M file for Chromium's fake camera: yuv420p, header colour space exactly ``C420``."""
    raw = path.with_suffix(".tmp.y4m")
    with av.open(str(raw), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with raw.open("rb") as src, path.open("wb") as dst:
        header = src.readline()
        fields = [f for f in header.decode("ascii").split() if not f.startswith(("C", "XYSCSS"))]
        dst.write((" ".join(fields) + " C420\n").encode("ascii"))
        while chunk := src.read(1 << 22):
            dst.write(chunk)
    raw.unlink()
    header = path.open("rb").readline().decode("ascii").split()
    assert header[0] == "YUV4MPEG2" and "C420" in header and f"W{WIDTH}" in header and f"H{HEIGHT}" in header, header


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    """Small grayscale picture, normalised for brightness and contrast (codecs shift both a little)."""
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[:, :, :3]), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
    return (small - small.mean()) / (small.std() + 1e-3) * 50.0


def make_camera(folder: Path) -> dict[str, Any]:
    """The fake camera's clip in ``folder``: its path, thumbnails of its frames and where they came from."""
    frames, source = clip_frames(FPS * CLIP_SECONDS)
    path = folder / "camera.y4m"
    write_y4m(path, frames)
    thumbs = np.stack([thumbnail(f) for f in frames])
    return {"path": path, "thumbs": thumbs, "source": source}


# ---- page helpers --------------------------------------------------------------------------------------


async def wait_for(page: Any, expression: str, what: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """Poll a JS expression until truthy; fail with ``what`` and the page's state otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = await page.evaluate(expression)
        except Exception as exc:  # noqa: BLE001 - playwright's Error: the page is loading afresh, ask again
            if "context was destroyed" not in str(exc):
                raise
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            state = await page.evaluate("""() => ({badge: document.querySelector('.badge')?.textContent,
                message: [...document.querySelectorAll('.message')].map((m) => m.textContent).join(' | '),
                mp: JSON.stringify(window.maskproxy, (k, v) => (k === 'samples' ? v?.length : v))})""")
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} on {page.url}: {state}")
        await asyncio.sleep(0.25)

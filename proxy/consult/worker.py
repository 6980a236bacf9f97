"""The masking worker of one consult: tracking and rendering off the event loop.

The event loop hands in camera frames as they arrive; one worker thread
masks them. Only the newest frame waits: a frame that arrives while another
is waiting replaces it and counts as dropped, so a slow frame never builds a
queue and latency cannot grow over a call. Results go back to the loop as
avatar frames (never the camera frame) with the input's timestamp.

If masking raises, the worker logs the error (no pixels, no landmarks), hands
back the *fault* placeholder for that frame and rebuilds its pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import cv2
import numpy as np

from proxy.params import MaskParams
from proxy.pipeline import MaskPipeline, fit_size

log = logging.getLogger(__name__)

#: Camera frames larger than this are downscaled on arrival (the avatar is rendered at this size).
MAX_FRAME_PIXELS = 1280 * 720


@dataclass
class MaskResult:
    """One masked frame, ready for the encoder."""

    frame: av.VideoFrame  #: the avatar (or a placeholder), with the input frame's pts
    params: MaskParams
    received: float  #: time.monotonic() when the camera frame arrived
    fault: bool = False  #: masking failed for this frame: ``frame`` is the fault placeholder
    timings: dict[str, float] | None = None  #: milliseconds per pipeline stage


def fault_placeholder(width: int, height: int) -> np.ndarray:
    """A calm grey card with an outline face and no eyes: drawn from nothing but the size."""
    image = np.full((height, width, 3), (70, 76, 84), np.uint8)
    centre = (width // 2, height // 2)
    axes = (max(4, min(width, height) // 6), max(6, min(width, height) // 4))
    cv2.ellipse(image, centre, axes, 0, 0, 360, (140, 148, 158), max(1, min(width, height) // 120), cv2.LINE_AA)
    scale = max(0.35, min(width, height) / 900)
    text = "video paused"
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.putText(image, text, ((width - tw) // 2, min(height - 4, centre[1] + axes[1] + th + 12)),
                cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 205, 210), 1, cv2.LINE_AA)
    return image


def rgb_to_frame(rgb: np.ndarray, like: av.VideoFrame | None = None) -> av.VideoFrame:
    """An encoder-ready I420 frame (BT.601, limited range), with ``like``'s timestamp.

    OpenCV converts even-sized frames about 3.5x faster than libswscale's rgb24 path,
    with the same result to within rounding; odd sizes go through libswscale.
    """
    height, width = rgb.shape[:2]
    if width % 2 == 0 and height % 2 == 0:
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
    else:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    if like is not None:
        frame.pts, frame.time_base = like.pts, like.time_base
    return frame


class MaskWorker:
    """One thread masking one consult's camera frames. ``start()``, ``submit()``..., ``stop()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_result: Callable[[MaskResult], None],
                 threads: int = 1, pipeline_factory: Callable[[], object] | None = None,
                 max_pixels: int = MAX_FRAME_PIXELS, eye_samples: int = 1,
                 supersample: int = 1) -> None:
        self._loop = loop
        self._eye_samples = eye_samples
        self._supersample = supersample
        self.max_pixels = max_pixels
        self._on_result = on_result
        self._threads = threads
        self._factory = pipeline_factory
        self._cond = threading.Condition()
        self._pending: tuple[av.VideoFrame, float] | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self.dropped = 0  #: frames replaced by a newer one before the worker took them
        self.errors = 0
        self.busy_since: float | None = None  #: monotonic time the current frame was taken, None when idle

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="mask-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, frame: av.VideoFrame, received: float) -> None:
        """Offer the newest camera frame; an older one still waiting is dropped."""
        with self._cond:
            if self._pending is not None:
                self.dropped += 1
            self._pending = (frame, received)
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._running = False
            self._pending = None
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def _make_pipeline(self) -> object:
        if self._factory is not None:
            return self._factory()
        return MaskPipeline(threads=self._threads, eye_samples=self._eye_samples, supersample=self._supersample)

    def _run(self) -> None:
        pipeline = None
        index = 0
        try:
            while True:
                with self._cond:
                    while self._running and self._pending is None:
                        self._cond.wait()
                    if not self._running:
                        return
                    frame, received = self._pending  # type: ignore[misc]
                    self._pending = None
                    self.busy_since = time.monotonic()
                result = None
                try:
                    if pipeline is None:
                        pipeline = self._make_pipeline()
                    result = self._mask(pipeline, frame, received, index, self.max_pixels)
                except Exception as exc:  # noqa: BLE001 - any failure must end in a placeholder
                    self.errors += 1
                    log.error("masking failed (%s: %s); sending the placeholder", exc.__class__.__name__, exc)
                    width, height = fit_size(frame.width, frame.height, self.max_pixels)
                    result = MaskResult(rgb_to_frame(fault_placeholder(width, height), frame),
                                        MaskParams.neutral(index, float(frame.time or 0.0)), received, fault=True)
                    if pipeline is not None:
                        try:
                            pipeline.close()  # type: ignore[attr-defined]
                        except Exception:  # noqa: BLE001
                            pass
                        pipeline = None
                finally:
                    self.busy_since = None
                index += 1
                if result is not None and self._running:
                    try:
                        self._loop.call_soon_threadsafe(self._on_result, result)
                    except RuntimeError:  # the loop is closed: we are shutting down
                        return
        finally:
            if pipeline is not None:
                pipeline.close()  # type: ignore[attr-defined]

    @staticmethod
    def _mask(pipeline: object, frame: av.VideoFrame, received: float, index: int, max_pixels: int) -> MaskResult:
        width, height = fit_size(frame.width, frame.height, max_pixels)
        rgb = frame.to_ndarray(width=width, height=height, format="rgb24")
        t = float(frame.time) if frame.time is not None else 0.0
        params, out = pipeline.process(rgb, t, index)  # type: ignore[attr-defined]
        return MaskResult(rgb_to_frame(out, frame), params, received,
                          timings=dict(pipeline.timings))  # type: ignore[attr-defined]

"""The masking pipeline for one stream: camera frame in, avatar frame out.

    rgb frame --FaceTracker--> FaceTrack --Retargeter--> MaskParams --EyeHold--> GazeTrim
              --> AvatarRenderer --> rgb frame (read back by GazeTrim's own tracker)

This is the only path from a patient's picture to anything that leaves the
proxy, and the picture stops at the tracker: the output buffer is written by
the renderer from :class:`~proxy.params.MaskParams` alone. The parameters
keep ``None`` for an eye that could not be measured (that is what the doctor's
data gets); :class:`~proxy.avatar.hold.EyeHold` fills those fields for drawing
only, with the last measured value and then neutral. :class:`~proxy.avatar.trim.GazeTrim`
reads the avatar just drawn back with a tracker of its own and trims the gaze drawn next, so the
avatar reads back as measured (the avatar's pixels, never the patient's). ``maskproxy mask``,
``maskproxy bench`` and the live proxy's workers all run this class.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from proxy.avatar.hold import EyeHold
from proxy.avatar.renderer import AvatarRenderer
from proxy.avatar.retarget import Retargeter
from proxy.avatar.trim import GazeTrim
from proxy.params import MaskParams
from proxy.tracking.tracker import FaceTracker

#: Frames larger than this (pixels) are tracked on a downscaled copy: the models
#: see 192x192 and 64x64 crops, so a bigger frame only costs time.
MAX_TRACK_PIXELS = 1280 * 720


def fit_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The frame size to work at: the input's, or smaller with the same aspect (even sides)."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class MaskPipeline:
    """Tracker, retargeter and renderer of one stream. Not thread-safe; ``close()`` when done.

    ``eye_samples`` goes to :class:`~proxy.tracking.tracker.FaceTracker` and ``supersample`` to
    :class:`~proxy.avatar.renderer.AvatarRenderer`; both default to the live settings (1), files raise them.
    With ``rgba`` the avatar comes out HxWx4 (alpha 255) in one buffer that the next frame overwrites:
    cheaper to read back from GL and no fresh pages to fault in every frame, for a caller that converts
    it to I420 at once (the live worker). Files keep a new HxWx3 RGB array per frame.
    ``trim_every`` reads the avatar back every that many frames (:class:`~proxy.avatar.trim.GazeTrim`;
    0: never): each reading is a tracking pass. With ``defer_trim`` the reading waits for :meth:`read_back`, so a
    live caller can send the frame first and read it back after (the reading then adds no latency).
    """

    def __init__(self, threads: int = 1, max_track_pixels: int = MAX_TRACK_PIXELS, eye_samples: int = 1,
                 supersample: int = 1, rgba: bool = False, trim_every: int = 1, defer_trim: bool = False) -> None:
        if supersample < 1:
            raise ValueError(f"supersample must be at least 1, not {supersample}")
        self.tracker = FaceTracker(threads=threads, eye_samples=eye_samples)
        self.retarget = Retargeter()
        self.hold = EyeHold()
        self.trim = GazeTrim(trim_every, eye_samples, threads, models_of=self.tracker) if trim_every > 0 else None
        self.defer_trim = defer_trim
        self._unread: tuple[MaskParams, np.ndarray] | None = None
        self.renderer: AvatarRenderer | None = None
        self.supersample = supersample
        self.rgba = rgba
        self._out: np.ndarray | None = None
        self.max_track_pixels = max_track_pixels
        #: Milliseconds per stage on the last frame.
        self.timings: dict[str, float] = {}

    def reset(self) -> None:
        """Forget the stream (a new clip, photo or camera): tracking, expression neutrals, held eyes, the trim."""
        self.tracker.reset()
        self.retarget.reset()
        self.hold.reset()
        self._unread = None
        if self.trim is not None:
            self.trim.reset()

    def track(self, rgb: np.ndarray, t: float, index: int) -> MaskParams:
        """Measure one frame: the patient's picture goes in, only parameters come out."""
        height, width = rgb.shape[:2]
        start = time.perf_counter()
        small_w, small_h = fit_size(width, height, self.max_track_pixels)
        if (small_w, small_h) != (width, height):
            rgb = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        track = self.tracker.process(rgb, t)
        middle = time.perf_counter()
        params = self.retarget(track, small_w, small_h, index, t)
        end = time.perf_counter()
        self.timings = {f"track.{k}": v for k, v in self.tracker.timings.items()}
        self.timings["track"] = (middle - start) * 1000
        self.timings["retarget"] = (end - middle) * 1000
        return params

    def render(self, params: MaskParams, width: int, height: int) -> np.ndarray:
        """The avatar for ``params`` at the given size (RGB or RGBA, uint8); unmeasured eye fields are held,
        then neutral."""
        start = time.perf_counter()
        wanted, params = params, self.hold(params)
        if self.trim is not None:
            params = self.trim.apply(params)
        if self.renderer is None:
            self.renderer = AvatarRenderer(width, height, supersample=self.supersample)
        elif (self.renderer.width, self.renderer.height) != (width, height):
            self.renderer.resize(width, height)
        if not self.rgba:
            frame = self.renderer.render(params)
        else:
            if self._out is None or self._out.shape[:2] != (height, width):
                self._out = np.empty((height, width, 4), np.uint8)
            frame = self.renderer.render_into(params, self._out)
        self.timings["render"] = (time.perf_counter() - start) * 1000
        self._unread = (wanted, frame) if self.trim is not None else None
        if not self.defer_trim:
            self.read_back()
        return frame

    def read_back(self) -> None:
        """Let the trim read the avatar last drawn (at once unless ``defer_trim``; call it before the next frame)."""
        if self.trim is None or self._unread is None:
            return
        start = time.perf_counter()
        wanted, frame = self._unread
        self._unread = None
        self.trim.observe(wanted, frame)
        self.timings["trim"] = (time.perf_counter() - start) * 1000

    def process(self, rgb: np.ndarray, t: float, index: int) -> tuple[MaskParams, np.ndarray]:
        """Track then render one frame; the output has the input's size."""
        height, width = rgb.shape[:2]
        params = self.track(rgb, t, index)
        return params, self.render(params, width, height)

    def close(self) -> None:
        if self.trim is not None:
            self.trim.close()
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None

    def __enter__(self) -> MaskPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

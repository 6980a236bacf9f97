"""The masking worker of one consult: tracking and rendering off the event loop.

The event loop hands in camera frames as they arrive; one worker thread
masks them. Only the newest frame waits: a frame that arrives while another
is waiting replaces it and counts as dropped, so a slow frame never builds a
queue and latency cannot grow over a call. The worker also encodes each avatar
frame (never the camera frame) for every receiver at once (``publish``, see
:mod:`proxy.consult.encoding`), unless it finished too late to be live; the
result (parameters, timings) then goes back to the loop.

The workers of a process take turns to mask and encode, one per CPU, each
taking its newest frame when its turn comes (:mod:`proxy.consult.gate`); a
worker builds its pipeline (models, GL context) before it asks for a turn.

If masking raises, the worker logs the error (no pixels, no landmarks), hands
back the *fault* placeholder for that frame and rebuilds its pipeline.

Its counters live in a :class:`MaskCounts` that the consult keeps across
workers: a worker that is replaced (after a crash, or when the patient
reconnects) does not take its counts with it, so they never go backwards.
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

from proxy.consult.gate import CpuGate
from proxy.params import MaskParams
from proxy.pipeline import MaskPipeline, fit_size

log = logging.getLogger(__name__)

#: Camera frames larger than this are downscaled on arrival (the avatar is rendered at this size).
MAX_FRAME_PIXELS = 1280 * 720
#: How long a stop waits for the worker to finish its current frame (s); its thread is a daemon beyond that.
STOP_TIMEOUT_S = 2.0


@dataclass
class MaskResult:
    """One masked frame, ready for the encoder."""

    frame: av.VideoFrame  #: the avatar (or a placeholder), with the input frame's pts
    params: MaskParams
    received: float  #: time.monotonic() when the camera frame arrived
    fault: bool = False  #: masking failed for this frame: ``frame`` is the fault placeholder
    timings: dict[str, float] | None = None  #: milliseconds per pipeline stage
    late: bool = False  #: finished more than ``late_after`` s after the camera frame arrived: not shown


@dataclass
class MaskCounts:
    """A consult's masking counters, kept across its workers (they only grow)."""

    dropped: int = 0  #: camera frames replaced by a newer one before a worker took them
    errors: int = 0  #: frames whose masking raised (the fault card was sent)
    late: int = 0  #: frames finished too late to be live (not shown)
    restarts: int = 0  #: workers that died and were replaced


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


def frame_to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """A decoded camera frame as RGB at ``width`` x ``height``, converted (and scaled) in one libswscale pass.

    On frames from the VP8 decoder this is libswscale's SIMD path: 0.12 ms at 640x480, where copying the
    planes out for OpenCV's conversion takes 0.31 ms (the other way round, RGB to I420, OpenCV is faster:
    :func:`rgb_to_frame`).
    """
    return frame.to_ndarray(width=width, height=height, format="rgb24")


def rgb_to_frame(rgb: np.ndarray, like: av.VideoFrame | None = None) -> av.VideoFrame:
    """An encoder-ready I420 frame (BT.601, limited range) from RGB or RGBA, with ``like``'s timestamp.

    OpenCV converts even-sized frames about 3.5x faster than libswscale's rgb24 path,
    with the same result to within rounding; odd sizes go through libswscale. RGBA
    converts to exactly the same frame as its RGB, at the same speed.
    """
    height, width = rgb.shape[:2]
    rgba = rgb.ndim == 3 and rgb.shape[2] == 4
    if width % 2 == 0 and height % 2 == 0:
        code = cv2.COLOR_RGBA2YUV_I420 if rgba else cv2.COLOR_RGB2YUV_I420
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, code), format="yuv420p")
    else:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgba" if rgba else "rgb24").reformat(format="yuv420p")
    if like is not None:
        frame.pts, frame.time_base = like.pts, like.time_base
    return frame


class MaskWorker:
    """One thread masking one consult's camera frames. ``start()``, ``submit()``..., ``stop()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_result: Callable[[MaskResult], None],
                 threads: int = 1, pipeline_factory: Callable[[], object] | None = None,
                 max_pixels: int = MAX_FRAME_PIXELS, eye_samples: int = 1,
                 supersample: int = 1, trim_every: int = 8, counts: MaskCounts | None = None,
                 publish: Callable[[av.VideoFrame, float], object] | None = None,
                 late_after: float | None = None, cost: Callable[[str, float], None] | None = None,
                 gate: CpuGate | None = None) -> None:
        """``publish(frame, received)`` encodes and sends each avatar frame that is not later than
        ``late_after`` seconds (from the worker's thread); ``cost(stage, cpu_seconds)`` hears what each
        stage cost; ``counts`` outlive this worker; ``gate`` (shared by a process's workers) gives the
        turns to mask and encode in."""
        self._gate = gate
        self._loop = loop
        self.counts = counts if counts is not None else MaskCounts()
        self._publish = publish
        self.late_after = late_after
        self._cost = cost
        self._eye_samples = eye_samples
        self._supersample = supersample
        self._trim_every = trim_every
        self.max_pixels = max_pixels
        self._on_result = on_result
        self._threads = threads
        self._factory = pipeline_factory
        self._cond = threading.Condition()
        self._pending: tuple[av.VideoFrame, float] | None = None
        self._running = False
        self._thread: threading.Thread | None = None
        self.busy_since: float | None = None  #: monotonic time the current frame was taken, None when idle
        self.dropped = 0  #: this worker's share of ``counts.dropped``
        self.errors = 0  #: this worker's share of ``counts.errors`` (is it failing now?)

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
                self.counts.dropped += 1
            self._pending = (frame, received)
            self._cond.notify()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Tell the thread to end after its current frame, and wait up to ``timeout`` s for it (0: do not wait)."""
        with self._cond:
            self._running = False
            self._pending = None
            self._cond.notify()
        self.join(timeout)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for a stopped worker's thread to end."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _make_pipeline(self) -> object:
        if self._factory is not None:
            return self._factory()
        return MaskPipeline(threads=self._threads, eye_samples=self._eye_samples, supersample=self._supersample,
                            rgba=True, trim_every=self._trim_every, defer_trim=True)

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
                if pipeline is None:  # loading the models and a GL context takes a second: not in a turn
                    try:
                        pipeline = self._make_pipeline()
                    except Exception:  # noqa: BLE001 - tried again below, where a failure sends the fault card
                        pipeline = None
                # the newest frame is taken once it is this worker's turn (frames that come meanwhile replace it)
                turn = self._gate.acquire() if self._gate is not None else False
                try:
                    with self._cond:
                        if not self._running or self._pending is None:
                            return
                        frame, received = self._pending
                        self._pending = None
                        self.busy_since = time.monotonic()
                    if self.late_after is not None and time.monotonic() - received > self.late_after:
                        self.counts.late += 1  # waited too long to be live: not worth masking
                        self.busy_since = None
                        continue
                    result, pipeline = self._mask_or_card(pipeline, frame, received, index)
                    if self._running:
                        self._send(result)
                finally:
                    if turn:
                        self._gate.release()  # type: ignore[union-attr]
                self.busy_since = None
                index += 1
                if self._running:
                    try:
                        self._loop.call_soon_threadsafe(self._on_result, result)
                    except RuntimeError:  # the loop is closed: we are shutting down
                        return
                    self._read_back(pipeline)
        finally:
            if pipeline is not None:
                pipeline.close()  # type: ignore[attr-defined]

    def _mask_or_card(self, pipeline: object | None, frame: av.VideoFrame, received: float,
                      index: int) -> tuple[MaskResult, object | None]:
        """The masked frame, or the fault card if masking raised (the pipeline is then rebuilt for the next)."""
        try:
            if pipeline is None:
                pipeline = self._make_pipeline()
            return self._mask(pipeline, frame, received, index, self.max_pixels, self._cost), pipeline
        except Exception as exc:  # noqa: BLE001 - any failure must end in a placeholder
            self.errors += 1
            self.counts.errors += 1
            log.error("masking failed (%s: %s); sending the placeholder", exc.__class__.__name__, exc)
            width, height = fit_size(frame.width, frame.height, self.max_pixels)
            card = MaskResult(rgb_to_frame(fault_placeholder(width, height), frame),
                              MaskParams.neutral(index, float(frame.time or 0.0)), received, fault=True)
            if pipeline is not None:
                try:
                    pipeline.close()  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001
                    pass
            return card, None

    def _read_back(self, pipeline: object | None) -> None:
        """The gaze trim's reading of the avatar just sent (proxy.avatar.trim), after it left: no latency added."""
        read_back = getattr(pipeline, "read_back", None)
        if read_back is None:
            return
        start = time.thread_time()
        try:
            read_back()
        except Exception as exc:  # noqa: BLE001 - a failed reading leaves the trim as it was, not the worker
            log.error("reading the avatar back failed (%s: %s)", exc.__class__.__name__, exc)
            return
        if self._cost is not None:
            self._cost("trim", time.thread_time() - start)

    def _send(self, result: MaskResult) -> None:
        """Encode and send the avatar frame, unless it is too late to be live."""
        if self.late_after is not None and time.monotonic() - result.received > self.late_after:
            result.late = True
            self.counts.late += 1
        elif self._publish is not None:
            try:
                self._publish(result.frame, result.received)
            except Exception as exc:  # noqa: BLE001 - a failed encode loses this frame, not the worker
                log.error("encoding the masked frame failed (%s: %s)", exc.__class__.__name__, exc)

    @staticmethod
    def _mask(pipeline: object, frame: av.VideoFrame, received: float, index: int, max_pixels: int,
              cost: Callable[[str, float], None] | None = None) -> MaskResult:
        clock = time.thread_time
        start = clock()
        width, height = fit_size(frame.width, frame.height, max_pixels)
        rgb = frame_to_rgb(frame, width, height)
        t = float(frame.time) if frame.time is not None else 0.0
        converted = clock()
        params, out = pipeline.process(rgb, t, index)  # type: ignore[attr-defined]
        processed = clock()
        result = MaskResult(rgb_to_frame(out, frame), params, received,
                            timings=dict(pipeline.timings))  # type: ignore[attr-defined]
        if cost is not None:
            cost("camera to RGB", converted - start)
            # the pipeline times its stages on the wall clock: its CPU time is shared out in proportion
            stages = {k: v for k, v in (result.timings or {}).items() if "." not in k and k != "total"}
            wall = sum(stages.values())
            for stage, ms in stages.items():
                cost(stage, (processed - converted) * (ms / wall if wall > 0 else 1 / len(stages)))
            if not stages:
                cost("mask", processed - converted)
            cost("I420", clock() - processed)
        return result

"""Synthetic masked frames whose index can be read back from the decoded video, and a clock to feed them by."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import av
import numpy as np

from proxy.consult.worker import rgb_to_frame
from proxy.recording.recorder import Recorder
from proxy.recording.sealed import HEADER_SIZE, MAGIC

WIDTH, HEIGHT = 320, 240
FPS = 30
#: The masked track's clock (aiortc's video clock).
TIME_BASE = fractions.Fraction(1, 90000)
BAR_STEP = 5  #: the bar moves this many pixels a frame


class FakeClock:
    """A monotonic clock the test moves by hand, so frames fed fast are stamped as if they came in real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bar_frame(index: int) -> av.VideoFrame:
    """A masked-looking frame (grey, as the avatar's background) with a white bar at x = 5 * index (mod 300)."""
    rgb = np.full((HEIGHT, WIDTH, 3), 70, np.uint8)
    x = (BAR_STEP * index) % (WIDTH - 20)
    rgb[: HEIGHT // 2, x:x + 10] = 255
    frame = rgb_to_frame(rgb)
    frame.pts, frame.time_base = index * (90000 // FPS), TIME_BASE
    return frame


def bar_index(rgb: np.ndarray) -> int:
    """Where the bar is, as a frame index (mod 60)."""
    columns = rgb[: HEIGHT // 2, :, 1].astype(float).mean(axis=0)
    window = np.convolve(columns, np.ones(10), mode="valid")
    return int(round(int(np.argmax(window)) / BAR_STEP))


def params_for(index: int) -> dict[str, Any]:
    """Parameters of frame ``index`` as the worker gives them: a slow gaze sweep, the left eye unmeasured at times."""
    t = index / FPS
    return {"frame": index, "t": round(t, 4), "face": True, "right_gaze_yaw": round(10 * np.sin(t), 3),
            "left_gaze_yaw": None if index % 7 == 3 else round(9 * np.sin(t), 3), "right_gaze_pitch": 1.0,
            "left_gaze_pitch": 1.5, "right_aperture": 0.3, "left_aperture": 0.31}


def feed(recorder: Recorder, count: int, clock: FakeClock | None = None, start: int = 0) -> int:
    """Feed ``count`` frames with their parameters, moving ``clock`` a frame each; returns how many were taken."""
    taken = 0
    for index in range(start, start + count):
        taken += recorder.add_video(bar_frame(index), params_for(index))
        if clock is not None:
            clock.now += 1 / FPS
    return taken


#: The start of a WebM file's EBML header up to its DocType ("webm"): what a player looks for first.
WEBM_HEADER = b"\x1a\x45\xdf\xa3"
WEBM_DOCTYPE = b"\x42\x82\x84webm"


def assert_sealed_video(path: Path) -> None:
    """The file on disk is sealed, not a video: it starts with the sealed magic and holds no WebM header.

    (Asking FFmpeg to open it is no test: now and then it probes random bytes as some audio
    format and "decodes" them without an error.)
    """
    raw = path.read_bytes()
    assert raw.startswith(MAGIC), raw[:8]
    assert WEBM_DOCTYPE not in raw and not raw[HEADER_SIZE:].startswith(WEBM_HEADER)


def decode(source: Any) -> list[tuple[int, np.ndarray]]:
    """(pts in the file's time base, RGB) of every frame PyAV decodes from a path or file object."""
    with av.open(source) as container:
        return [(frame.pts, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]

"""Reading and writing media files: photos and anything PyAV decodes.

Frames are handed on as uint8 RGB arrays with their time in seconds from
the start of the stream. Errors become :class:`InputError` with a message
fit for one line on a terminal.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class InputError(Exception):
    """The input cannot be read or is not a photo or video."""


@dataclass(frozen=True)
class Frame:
    index: int
    t: float  #: seconds from the stream's first frame
    rgb: np.ndarray  #: HxWx3 uint8
    pts: int | None = None
    time_base: object | None = None


def is_photo(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_EXTENSIONS


def read_photo(path: Path) -> np.ndarray:
    """A photo as HxWx3 uint8 RGB."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not a readable image")
    return np.ascontiguousarray(image[:, :, ::-1])


def write_photo(path: Path, rgb: np.ndarray) -> None:
    """Write atomically: a failed write leaves no partial file."""
    ext = path.suffix.lower()
    ok, data = cv2.imencode(ext if ext in PHOTO_EXTENSIONS else ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise InputError(f"{path}: cannot encode this image format")
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


class VideoReader:
    """Decodes the first video stream of a file. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not a readable video ({exc.__class__.__name__})") from None
        if not self.container.streams.video:
            self.container.close()
            raise InputError(f"{path}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.path = path

    @property
    def fps(self) -> float:
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else 30.0

    @property
    def frame_count(self) -> int | None:
        if self.stream.frames:
            return int(self.stream.frames)
        if self.stream.duration and self.stream.time_base:
            return int(float(self.stream.duration * self.stream.time_base) * self.fps)
        return None

    @property
    def has_audio(self) -> bool:
        return bool(self.container.streams.audio)

    def frames(self) -> Iterator[Frame]:
        start: float | None = None
        try:
            for index, frame in enumerate(self.container.decode(self.stream)):
                t = float(frame.time) if frame.time is not None else index / self.fps
                if start is None:
                    start = t
                yield Frame(index, t - start, frame.to_ndarray(format="rgb24"), frame.pts, frame.time_base)
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.path}: decoding failed ({exc.__class__.__name__})") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_input(path: Path) -> Iterator[Frame]:
    """Frames of a photo (one frame, t = 0) or a video."""
    if is_photo(path):
        yield Frame(0, 0.0, read_photo(path))
        return
    with VideoReader(path) as reader:
        yield from reader.frames()

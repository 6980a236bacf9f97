"""WebM tracks of a recording: the masked video (VP8) and, where allowed, audio (Opus), on a sealed or plain sink.

The muxer writes to a file object that cannot seek (a :class:`~proxy.recording.sealed.SealedWriter`
encrypts as it goes), so the WebM has no size fields to patch at the end; it
closes a cluster every second (``cluster_time_limit``) and hands each packet on
at once (``flush_packets``), so a crash leaves a file that plays up to about its
last second. Frames are copied before they are given a timestamp: the caller's
frame object is also on its way to the doctor's encoder and is never changed.
"""

from __future__ import annotations

import fractions
from typing import Any

import av
import numpy as np

#: Timestamps in a WebM file are milliseconds; params.jsonl uses the same unit for ``video_pts``.
TIME_BASE = fractions.Fraction(1, 1000)
AUDIO_RATE = 48000
MUXER_OPTIONS = {"cluster_time_limit": "1000", "flush_packets": "1"}


def _container(sink: Any) -> Any:
    return av.open(sink, "w", format="webm", options=dict(MUXER_OPTIONS))


class _MediaFile:
    """What both tracks share: syncing the sink between packets, closing, abandoning after a fault."""

    sink: Any
    _container: Any
    _stream: Any
    _closed: bool

    def sync(self) -> None:
        """Seal and sync what the muxer has handed over so far."""
        self.sink.sync()

    def close(self) -> None:
        """Flush the encoder and finish the file (the muxer closes the sink with it)."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()

    def abandon(self) -> None:
        """Close after a fault without caring for errors: what the sink holds stays readable."""
        self._closed = True
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the sink may have failed already
            pass
        abandon = getattr(self.sink, "abandon", None)
        if abandon is not None:
            abandon()


class VideoFile(_MediaFile):
    """One video track as WebM/VP8: one single-threaded encoder, a fixed size (other sizes are scaled)."""

    def __init__(self, sink: Any, width: int, height: int, bitrate: int = 1_500_000, fps: int = 30) -> None:
        self.width, self.height = width + width % 2, height + height % 2
        self.frames = 0
        self.sink = sink
        self._container = _container(sink)
        stream = self._container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.codec_context.time_base = TIME_BASE
        stream.codec_context.thread_count = 1  # a thread pool per recording would fight the masking threads
        stream.codec_context.bit_rate = bitrate
        stream.codec_context.gop_size = 2 * fps  # a keyframe every 2 s: a torn file still decodes from the next
        stream.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
        self._stream = stream
        self._closed = False

    def write(self, frame: av.VideoFrame, pts: int) -> None:
        """Encode a copy of ``frame`` at ``pts`` milliseconds."""
        if (frame.width, frame.height, frame.format.name) == (self.width, self.height, "yuv420p"):
            copy = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        else:
            copy = frame.reformat(width=self.width, height=self.height, format="yuv420p")
            if copy is frame:
                copy = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
        copy.pts, copy.time_base = pts, TIME_BASE
        for packet in self._stream.encode(copy):
            self._container.mux(packet)
        self.frames += 1


class AudioFile(_MediaFile):
    """The consult's audio as WebM/Opus, from frames of any format (resampled to 48 kHz stereo)."""

    def __init__(self, sink: Any, bitrate: int = 64_000) -> None:
        self.sink = sink
        self._container = _container(sink)
        stream = self._container.add_stream("libopus", rate=AUDIO_RATE)
        stream.codec_context.layout = "stereo"
        stream.codec_context.bit_rate = bitrate
        self._stream = stream
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        self._next: int | None = None
        self.frames = 0
        self._closed = False

    def write(self, frame: av.AudioFrame, start: int) -> None:
        """Encode ``frame``; the first one is placed at sample ``start``, the rest follow without gaps."""
        data = frame.to_ndarray()
        copy = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                          layout=frame.layout.name)
        copy.sample_rate = frame.sample_rate
        for out in self._resampler.resample(copy):
            if self._next is None:
                self._next = start
            out.pts, out.time_base = self._next, fractions.Fraction(1, AUDIO_RATE)
            self._next += out.samples
            for packet in self._stream.encode(out):
                self._container.mux(packet)
        self.frames += 1


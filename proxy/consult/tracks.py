"""Media tracks the proxy sends: the masked video, and relays that survive a peer coming and going.

aiortc pulls frames from a track's ``recv()`` at its own pace. Each track
here keeps its output timestamps monotonic (a browser's jitter buffer dislikes
time going backwards) while keeping the spacing of the source's timestamps:
frames are re-based, not re-timed.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from functools import lru_cache

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AUDIO_PTIME = 0.020  #: 20 ms audio frames, as WebRTC sends them
PLACEHOLDER_FPS = 15


class Timeline:
    """Maps each source's timestamps onto one monotonic output clock."""

    def __init__(self, clock: int) -> None:
        self.clock = clock
        self._offset: int | None = None
        self._last: int | None = None
        self._source: object | None = None

    def place(self, pts: int | None, time_base: fractions.Fraction | None, source: object, step: int) -> int:
        """Output pts for a frame at ``pts`` of ``source``; a new source continues after the last output."""
        ticks = int(pts * time_base * self.clock) if pts is not None and time_base is not None else None
        if ticks is None:
            out = (self._last + step) if self._last is not None else 0
        else:
            if source is not self._source or self._offset is None or (
                    self._last is not None and ticks + self._offset <= self._last):
                base = (self._last + step) if self._last is not None else 0
                self._offset = base - ticks
                self._source = source
            out = ticks + self._offset
        self._last = out
        return out


class Pacer:
    """Sleeps so that generated frames come out in real time."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next: float | None = None

    async def wait(self) -> None:
        now = time.monotonic()
        if self._next is None or self._next < now - 1.0:
            self._next = now
        delay = self._next - now
        if delay > 0:
            await asyncio.sleep(delay)
        self._next += self.interval


def silence(samples: int = int(AUDIO_RATE * AUDIO_PTIME)) -> av.AudioFrame:
    """``samples`` of stereo silence in the audio format all relayed audio is converted to."""
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 2 * samples), np.int16), format="s16", layout="stereo")
    frame.sample_rate = AUDIO_RATE
    return frame


def opus_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) an Opus packet holds, from its TOC byte (RFC 6716, 3.1); 960 if it cannot tell."""
    if not packet:
        return int(AUDIO_RATE * AUDIO_PTIME)
    config, code = packet[0] >> 3, packet[0] & 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config % 4]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config % 2]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config % 4]
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    else:
        count = packet[1] & 0x3F if len(packet) > 1 else 1
    return frame * max(count, 1)


@lru_cache(maxsize=1)
def silence_packet() -> bytes:
    """20 ms of stereo silence as one Opus packet (encoded once per process, then only sent)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.format, codec.layout, codec.sample_rate = "s16", "stereo", AUDIO_RATE
    codec.bit_rate = 96000
    codec.time_base = AUDIO_TIME_BASE
    codec.options = {"application": "voip"}
    samples = int(AUDIO_RATE * AUDIO_PTIME)
    packets: list[av.Packet] = []
    for index in range(4):  # the encoder's look-ahead: the first packets can be empty
        frame = silence(samples)
        frame.pts, frame.time_base = index * samples, AUDIO_TIME_BASE
        packets += codec.encode(frame)
    return bytes(packets[-1])


class AudioFormat:
    """Converts audio frames of any format to s16 stereo 48 kHz.

    aiortc's Opus encoder fixes its resampler's input format on the first frame and
    raises on any other, so a relay that switches between silence and a peer's
    audio (or between peers whose decoders differ) must send one format only.
    """

    def __init__(self) -> None:
        self._resamplers: dict[tuple[str, str, int], av.AudioResampler] = {}

    def convert(self, frame: av.AudioFrame) -> list[av.AudioFrame]:
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key == ("s16", "stereo", AUDIO_RATE):
            return [frame]
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)
        out = resampler.resample(frame)
        for converted in out:
            converted.sample_rate = AUDIO_RATE
        return out


class SwitchableTrack(MediaStreamTrack):
    """Relays whatever source is current, or a placeholder (silence, a still picture) when none is.

    ``source`` is a callable returning the current source track (or None), so a
    peer that reconnects is picked up without renegotiating the other side.
    A video ``placeholder`` may give a VP8 keyframe (``av.Packet``) instead of a
    frame: it is sent as it is, and the first source frame after it is encoded
    as a keyframe, so the receiver's decoder never mixes the two.
    With ``encoded`` (audio only) the sources yield Opus packets
    (:func:`proxy.consult.aiortc_speedups.relay_encoded`) and so does this track,
    silence included: the sender only packetizes them.
    """

    def __init__(self, kind: str, source: Callable[[], MediaStreamTrack | None],
                 placeholder: Callable[[], av.VideoFrame | av.Packet] | None = None, encoded: bool = False) -> None:
        super().__init__()
        if encoded and kind != "audio":
            raise ValueError("only audio is relayed encoded")
        self.kind = kind
        self.encoded = encoded
        self._source = source
        self._placeholder = placeholder
        self._timeline = Timeline(AUDIO_RATE if kind == "audio" else VIDEO_CLOCK)
        self._pacer = Pacer(AUDIO_PTIME if kind == "audio" else 1 / PLACEHOLDER_FPS)
        self._audio = AudioFormat()
        self._converted: list[tuple[av.AudioFrame, object]] = []
        self._after_packet = False  #: the last video sent was a placeholder packet

    async def recv(self) -> av.AudioFrame | av.VideoFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._converted:
            return self._stamp(*self._converted.pop(0))
        while True:
            source = self._source()
            if source is None or source.readyState != "live":
                return self._stamp(await self._filler(), None)
            try:
                # not asyncio.wait_for: on Python 3.11 it swallows a cancellation (aiortc stopping the sender)
                # that comes with the source's end, and the sender's task then never ends (tests/consult/test_tracks)
                async with asyncio.timeout(0.5):
                    frame = await source.recv()
            except TimeoutError:
                return self._stamp(await self._filler(), None)
            except MediaStreamError:
                await asyncio.sleep(0)
                continue
            if self.kind == "audio" and not self.encoded:
                frames = self._audio.convert(frame)  # type: ignore[arg-type]
                if not frames:
                    continue  # the resampler is buffering
                self._converted.extend((f, source) for f in frames[1:])
                frame = frames[0]
            elif self._after_packet and isinstance(frame, av.VideoFrame):
                frame.pict_type = av.video.frame.PictureType.I  # the encoder's stream restarts after the still
                self._after_packet = False
            return self._stamp(frame, source)

    async def _filler(self) -> av.AudioFrame | av.VideoFrame | av.Packet:
        await self._pacer.wait()
        if self.encoded:
            return av.Packet(silence_packet())
        if self.kind == "audio":
            return silence()
        assert self._placeholder is not None
        picture = self._placeholder()
        self._after_packet = isinstance(picture, av.Packet)
        return picture

    def _stamp(self, frame: av.AudioFrame | av.VideoFrame | av.Packet,
               source: object | None) -> av.AudioFrame | av.VideoFrame | av.Packet:
        if self.kind == "audio":
            if isinstance(frame, av.Packet):
                step = opus_samples(bytes(frame))
            else:
                step = getattr(frame, "samples", int(AUDIO_RATE * AUDIO_PTIME))
            frame.pts = self._timeline.place(frame.pts if source else None, frame.time_base, source, step)
            frame.time_base = AUDIO_TIME_BASE
        else:
            frame.pts = self._timeline.place(frame.pts if source else None, frame.time_base, source,
                                             VIDEO_CLOCK // PLACEHOLDER_FPS)
            frame.time_base = VIDEO_TIME_BASE
        return frame


class MaskedVideoTrack(MediaStreamTrack):
    """The avatar stream of one consult: masked frames as the worker finishes them.

    ``push()`` (on the event loop) offers a finished frame; only the newest
    one is kept. With nothing new for ``stall_after`` seconds the track sends
    the ``idle`` picture (the neutral avatar, or the fault card when the
    worker is stuck) at ``PLACEHOLDER_FPS``, so the doctor always sees
    something, never the camera. ``on_frame(frame, tag)`` sees every frame it
    hands out, once its outgoing timestamp is set (``tag`` None for the idle
    picture): the recorder is fed there.
    """

    kind = "video"

    def __init__(self, idle: Callable[[], av.VideoFrame], stall_after: float = 0.5,
                 on_sent: Callable[[object], None] | None = None,
                 on_frame: Callable[[av.VideoFrame, object], None] | None = None) -> None:
        super().__init__()
        self._idle = idle
        self._stall_after = stall_after
        self._on_sent = on_sent
        self._on_frame = on_frame
        self._latest: tuple[av.VideoFrame, object] | None = None
        self._event = asyncio.Event()
        self._timeline = Timeline(VIDEO_CLOCK)
        self._live_source = object()
        self._last_live: float | None = None  #: when the last pushed frame was sent

    def push(self, frame: av.VideoFrame, tag: object = None) -> None:
        self._latest = (frame, tag)
        self._event.set()

    async def recv(self) -> av.VideoFrame:
        """The newest pushed frame; once none came for ``stall_after`` s, the idle picture at PLACEHOLDER_FPS."""
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            since = None if self._last_live is None else time.monotonic() - self._last_live
            stalled = since is None or since >= self._stall_after
            timeout = 1 / PLACEHOLDER_FPS if stalled else self._stall_after - since  # type: ignore[operator]
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see SwitchableTrack.recv
                    await self._event.wait()
            except TimeoutError:
                if stalled or time.monotonic() - self._last_live >= self._stall_after:  # type: ignore[operator]
                    frame = self._idle()
                    frame.pts = self._timeline.place(None, None, None, VIDEO_CLOCK // PLACEHOLDER_FPS)
                    frame.time_base = VIDEO_TIME_BASE
                    if self._on_frame is not None:
                        self._on_frame(frame, None)
                    return frame
                continue
            self._event.clear()
            if self._latest is not None:
                break
        frame, tag = self._latest
        self._latest = None
        self._last_live = time.monotonic()
        frame.pts = self._timeline.place(frame.pts, frame.time_base, self._live_source, 3000)
        frame.time_base = VIDEO_TIME_BASE
        if self._on_sent is not None:
            self._on_sent(tag)
        if self._on_frame is not None:
            self._on_frame(frame, tag)
        return frame

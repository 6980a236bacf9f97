"""One VP8 encode of the masked picture, for everyone who receives it.

The doctor and the patient's self-view see the same avatar. aiortc gives every
sender an encoder of its own, so the proxy used to encode each masked frame
twice (and the self-view once more per frame it kept). Here the masking worker
encodes each frame once, in its own thread, and every sender gets the same
bytes: aiortc's sender packetizes an ``av.Packet`` without encoding it.

* :class:`VideoEncoder` is libvpx with aiortc's real-time settings, minus the
  camera's noise filter (a rendered picture has no sensor noise to remove; it
  was a third of the encode) and at a faster speed setting that loses nothing
  on flat-shaded pictures (:data:`CPU_USED`).
* :class:`SharedVideo` is one consult's masked stream: it encodes each frame
  under a lock (the worker's live frames, the loop's idle pictures), assigns
  the output clock, and hands each encoded frame to every
  :class:`EncodedTrack`, in order.
* :class:`EncodedTrack` is one sender's view of it. It starts on a keyframe and
  asks for one when it joins or its receiver lost the picture (PLI/FIR). A
  receiver that falls behind by more than :data:`MAX_BACKLOG` frames loses the
  backlog and restarts on the next keyframe: a slow reader never builds a queue.

Inter frames depend on the frames before them, so a sender cannot simply skip
frames. For a self-view slower than the doctor's picture the encoder makes two
temporal layers: even frames (layer 0) refer only to layer 0 and odd frames
(layer 1) are referred to by none, with error-resilient entropy coding, so
layer 0 alone decodes to exactly the same pictures (tests/consult/test_encoding.py).
The doctor gets both layers.

Bitrate: each receiver's estimate (REMB) reaches the stream; the encoder follows
the lowest, within aiortc's limits, and restarts (with a keyframe) when it moves
by more than a tenth, as aiortc's own encoder does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.codecs.vpx import DEFAULT_BITRATE, MAX_BITRATE, MIN_BITRATE
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from proxy.consult import aiortc_speedups
from proxy.consult.tracks import PLACEHOLDER_FPS, VIDEO_CLOCK, VIDEO_TIME_BASE, Timeline

log = logging.getLogger(__name__)

#: Frames a sender may fall behind before it drops them and waits for a keyframe (about 0.25 s at 30 fps).
MAX_BACKLOG = 8
#: A bitrate estimate that moves the target by more than this fraction restarts the encoder.
BITRATE_STEP = 0.1
#: Share of the bitrate given to temporal layer 0 when there are two layers (WebRTC's split).
BASE_LAYER_SHARE = 0.6
#: libvpx speed (aiortc uses -6). On the avatar -10 takes a fifth less time than -6 and loses nothing (on d6's
#: masked frames at 500 kbit/s, 40.9 dB from the rendered picture against 39.3); -12 and faster blur some frames
#: (33 dB). With the denoiser off, an encode costs about 30% less than aiortc's own (``maskproxy bench`` prints
#: the comparison; tests/consult/test_encoding.py holds the doctor's frames above 35 dB from today's).
CPU_USED = -10


@dataclass(frozen=True)
class EncodedFrame:
    """One encoded picture of the shared stream."""

    data: bytes
    pts: int  #: on the stream's 90 kHz clock, monotonic
    keyframe: bool
    layer: int  #: temporal layer: 0, or 1 for frames no other frame refers to
    tag: object = None  #: what the producer attached (the camera frame's arrival time for live frames)


class VideoEncoder:
    """libvpx VP8 in real-time mode, as aiortc configures it, for a rendered picture. Not thread-safe."""

    def __init__(self, bitrate: int = DEFAULT_BITRATE, layers: int = 1, cpu_used: int = CPU_USED,
                 max_quantizer: int = 56) -> None:
        if layers not in (1, 2):
            raise ValueError(f"layers must be 1 or 2, not {layers}")
        self.layers = layers
        self.bitrate = bitrate
        self.cpu_used = cpu_used
        self.max_quantizer = max_quantizer
        self._codec: av.VideoCodecContext | None = None
        self._index = 0  #: position in the temporal pattern of the next frame

    def encode(self, frame: av.VideoFrame, keyframe: bool = False) -> tuple[bytes, bool, int]:
        """``frame`` (yuv420p, pts on the 90 kHz clock) as ``(bytes, keyframe, layer)``."""
        codec = self._codec
        if codec is not None and (codec.width, codec.height) != (frame.width, frame.height):
            codec = None
        if codec is None:
            codec = self._codec = self._open(frame.width, frame.height)
            self._index = 0
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
            self._index = 0  # libav restarts its temporal pattern on a requested keyframe
        packets = codec.encode(frame)
        layer = self._index % 2 if self.layers == 2 else 0
        self._index += 1
        data = b"".join(bytes(p) for p in packets)
        return data, any(p.is_keyframe for p in packets), layer

    def set_bitrate(self, bitrate: int) -> bool:
        """Aim at ``bitrate`` (clamped to aiortc's range); True when that restarts the encoder."""
        bitrate = max(MIN_BITRATE, min(bitrate, MAX_BITRATE))
        if abs(bitrate - self.bitrate) <= BITRATE_STEP * self.bitrate:
            return False
        self.bitrate = bitrate
        self._codec = None  # reopened on the next frame, which is then a keyframe
        return True

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        codec.bit_rate = self.bitrate
        codec.time_base = VIDEO_TIME_BASE
        codec.gop_size = 3000  # kf_max_dist: keyframes when asked for
        codec.qmin, codec.qmax = 2, self.max_quantizer
        options = {
            # aiortc's settings (aiortc.codecs.vpx.Vp8Encoder): CBR with a one-second buffer, no lag
            "bufsize": str(self.bitrate),
            "minrate": str(self.bitrate),
            "maxrate": str(self.bitrate),
            "cpu-used": str(self.cpu_used),
            "deadline": "realtime",
            "lag-in-frames": "0",
            "overshoot-pct": "15",
            "undershoot-pct": "100",
            "partitions": "0",
            "static-thresh": "1",
            # a rendered avatar has no sensor noise: the temporal denoiser only costs time
            "noise-sensitivity": "0",
        }
        if self.layers == 2:
            base = int(self.bitrate * BASE_LAYER_SHARE) // 1000
            options["ts-parameters"] = (f"ts_number_layers=2:ts_target_bitrate={base},{self.bitrate // 1000}:"
                                        "ts_rate_decimator=2,1:ts_periodicity=2:ts_layer_id=0,1:ts_layering_mode=2")
            # no frame's entropy context carries over, so dropping layer 1 changes nothing in layer 0
            options["error-resilient"] = "default"
        codec.options = options
        codec.thread_count = 1
        return codec


def keyframe_packet(data: bytes) -> av.Packet:
    """A still picture's keyframe (see :func:`encode_keyframe`) as a packet a sender only packetizes."""
    return av.Packet(data)


def encode_keyframe(rgb: np.ndarray) -> bytes:
    """``rgb`` (even sides) as one VP8 keyframe.

    A still picture is sent by repeating its keyframe: each one decodes on its own, so it can follow
    anything and be followed by anything that starts with a keyframe, and nothing is encoded again.
    A flat card is a few hundred bytes (640x360: 0.4 KB, 50 kbit/s at 15 a second).
    """
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    frame.pts, frame.time_base = 0, VIDEO_TIME_BASE
    # encoded once: at the best quality (a card's colour is then exact, at the same size)
    data, keyframe, _ = VideoEncoder(bitrate=MAX_BITRATE, max_quantizer=8).encode(frame, keyframe=True)
    assert keyframe
    return data


class SharedVideo:
    """One consult's masked stream: encoded once, sent by every subscribed sender.

    ``publish()`` may be called from any thread (the masking worker); the
    encoded frame reaches the subscribers on the event loop, in encoding order.
    With nothing published for ``stall_after`` seconds the stream encodes the
    ``idle()`` picture at PLACEHOLDER_FPS (the neutral avatar, or the fault card
    when the worker is stuck), so the receivers always see something, never the
    camera. ``on_sent(tag)`` hears of each published live frame once it is
    encoded. ``start()`` on the loop, ``stop()`` when the consult ends.
    """

    def __init__(self, idle: Callable[[], av.VideoFrame], stall_after: float = 0.5,
                 on_sent: Callable[[object], None] | None = None, layers: int = 1,
                 on_encoded: Callable[[float], None] | None = None) -> None:
        self._idle = idle
        self._stall_after = stall_after
        self._on_sent = on_sent
        self._on_encoded = on_encoded  #: CPU seconds of each encode, for the cost meter
        self.encoder = VideoEncoder(layers=layers)
        self._lock = threading.Lock()
        self._timeline = Timeline(VIDEO_CLOCK)
        self._live_source = object()
        self._keyframe = True
        self._last_live: float | None = None
        self._subscribers: list[EncodedTrack] = []
        self._estimates: dict[int, int] = {}
        self._target = DEFAULT_BITRATE  #: the bitrate the encoder should aim at (set on the loop, applied in _encode)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.frames = 0  #: frames encoded (live and idle)
        self.keyframes = 0

    @property
    def layers(self) -> int:
        return self.encoder.layers

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._idle_loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for track in list(self._subscribers):
            track.stop()

    def subscribe(self, max_layer: int = 1) -> EncodedTrack:
        """A new sender's track; ``max_layer`` 0 takes only layer 0 (half the frame rate with two layers)."""
        track = EncodedTrack(self, max_layer)
        self._subscribers.append(track)
        return track

    def _unsubscribe(self, track: EncodedTrack) -> None:
        if track in self._subscribers:
            self._subscribers.remove(track)
        if self._estimates.pop(id(track), None) is not None:
            self._apply_estimates()

    def request_keyframe(self) -> None:
        """The next encoded frame is a keyframe (thread-safe)."""
        self._keyframe = True

    def estimate(self, track: EncodedTrack, bitrate: int) -> None:
        """``track``'s receiver estimated it can take ``bitrate`` bits per second (on the loop)."""
        self._estimates[id(track)] = bitrate
        self._apply_estimates()

    def _apply_estimates(self) -> None:
        """The new target reaches the encoder with the next frame it encodes: the event loop never waits for
        the encoder's lock (a worker may hold it for a whole encode)."""
        self._target = min(self._estimates.values()) if self._estimates else DEFAULT_BITRATE

    @property
    def wanted(self) -> bool:
        """Whether any sender takes the stream (no subscriber: nothing is worth encoding)."""
        return bool(self._subscribers)

    def publish(self, frame: av.VideoFrame, tag: object = None) -> bool:
        """Encode a live frame (from any thread) and hand it to the subscribers; False when nobody takes it."""
        if not self._subscribers or self._loop is None:
            return False
        self._encode(frame, self._live_source, tag)
        self._last_live = time.monotonic()
        return True

    def _encode(self, frame: av.VideoFrame, source: object | None, tag: object) -> None:
        loop = self._loop
        assert loop is not None
        with self._lock:
            pts = self._timeline.place(frame.pts if source else None, frame.time_base if source else None, source,
                                       VIDEO_CLOCK // PLACEHOLDER_FPS)
            original = frame.pts, frame.time_base, frame.pict_type
            frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
            if self.encoder.set_bitrate(self._target):
                log.debug("masked stream: %d bps", self.encoder.bitrate)
            keyframe, self._keyframe = self._keyframe, False
            start = time.thread_time()
            try:
                data, is_key, layer = self.encoder.encode(frame, keyframe)
            finally:  # the caller's frame keeps its own timestamp (others read it)
                frame.pts, frame.pict_type = original[0], original[2]
                if original[1] is not None:
                    frame.time_base = original[1]
            if self._on_encoded is not None:
                self._on_encoded(time.thread_time() - start)
            if not data:
                return
            self.frames += 1
            self.keyframes += is_key
            encoded = EncodedFrame(data, pts, is_key, layer, tag)
            try:  # in the lock: the loop receives frames in encoding order
                loop.call_soon_threadsafe(self._deliver, encoded, source is not None)
            except RuntimeError:  # the loop is closed: shutting down
                pass

    def _deliver(self, encoded: EncodedFrame, live: bool) -> None:
        for track in list(self._subscribers):
            if track.gone:
                track.stop()  # its connection closed before its sender ever ran: aiortc will not stop it
            else:
                track._offer(encoded)
        if live and self._on_sent is not None:
            self._on_sent(encoded.tag)

    async def _idle_loop(self) -> None:
        """The idle picture at PLACEHOLDER_FPS while no live frame came for ``stall_after`` s."""
        while True:
            await asyncio.sleep(1 / PLACEHOLDER_FPS)
            last = self._last_live
            if not self._subscribers or (last is not None and time.monotonic() - last < self._stall_after):
                continue
            try:
                frame = self._idle()
                await asyncio.to_thread(self._encode, frame, None, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the stream must outlive a bad idle picture
                log.error("masked stream: idle picture failed (%s: %s)", exc.__class__.__name__, exc)


class EncodedTrack(MediaStreamTrack):
    """One sender's share of a :class:`SharedVideo`: its encoded frames as ``av.Packet``s, from a keyframe on.

    It asks the stream for a keyframe when its sender first reads and after it lost frames, not before:
    a track whose sender never runs (a connection that never completes) holds at most MAX_BACKLOG
    frames and costs the others nothing.
    """

    kind = "video"

    def __init__(self, stream: SharedVideo, max_layer: int = 1) -> None:
        super().__init__()
        self._stream = stream
        self.max_layer = max_layer
        self._pending: deque[EncodedFrame] = deque()
        self._event = asyncio.Event()
        self._need_keyframe = True
        self._asked = False
        self._behind = False  #: it lost frames and waits for a keyframe
        self._sender: object | None = None
        self.skipped = 0  #: frames dropped because this sender fell behind (it then restarted on a keyframe)

    def attach(self, sender: object) -> None:
        """Let ``sender``'s receiver ask for keyframes and report its bitrate estimate to the stream."""
        self._sender = sender
        aiortc_speedups.on_keyframe_request(sender, self._stream.request_keyframe)
        aiortc_speedups.on_bitrate_estimate(sender, lambda bitrate: self._stream.estimate(self, bitrate))

    @property
    def gone(self) -> bool:
        """Whether the connection of the sender it is attached to has closed."""
        transport = getattr(self._sender, "transport", None)
        return transport is not None and getattr(transport, "state", None) == "closed"

    def _offer(self, encoded: EncodedFrame) -> None:
        if self.readyState != "live" or (encoded.layer > self.max_layer and not encoded.keyframe):
            return
        if self._need_keyframe and not encoded.keyframe:
            self.skipped += self._behind
            return
        if len(self._pending) >= MAX_BACKLOG:  # the sender fell behind: start again from a keyframe
            self.skipped += len(self._pending)
            self._pending.clear()
            if not encoded.keyframe:
                self.skipped += 1
                self._need_keyframe, self._asked, self._behind = True, False, True
                return
        self._need_keyframe, self._asked, self._behind = False, False, False
        self._pending.append(encoded)
        self._event.set()

    async def recv(self) -> av.Packet:
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            if self._need_keyframe and not self._asked:
                self._asked = True
                self._stream.request_keyframe()
            self._event.clear()
            await self._event.wait()
        if self.readyState != "live":
            raise MediaStreamError
        encoded = self._pending.popleft()
        packet = av.Packet(encoded.data)
        packet.pts = encoded.pts
        packet.time_base = VIDEO_TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        self._event.set()
        self._stream._unsubscribe(self)

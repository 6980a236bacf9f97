"""A cap on the frame size a client can make the proxy decode.

A VP8 keyframe declares its picture size in its first ten bytes, and libvpx allocates
buffers for that size before it looks at the rest: a 5 KB keyframe declaring 16000x16000
costs about 0.9 GB and over a second of decoding, whatever the camera really sends. The
answer therefore advertises the cap in the VP8 fmtp (``max-fs`` in 16x16 macroblocks,
``max-fr``; RFC 7741), which browsers' encoders respect, and each receiver's decoder input
is filtered: a keyframe that declares more (or whose header is broken) is dropped before it
reaches the decoder thread, and reported to the consult.

The filter needs one aiortc internal, the receiver's decoder queue (``RTCRtpReceiver.__decoder_queue``,
fed by ``_handle_rtp_packet`` on the event loop, read by ``decoder_worker`` in its thread); it is
kept here, and tests/consult/test_security_media.py fails if aiortc changes it.
"""

from __future__ import annotations

import math
import queue
import re
from collections.abc import Callable
from typing import Any

from aiortc.rtcrtpreceiver import RTCRtpReceiver

from proxy.consult.stats import ByteRate

#: Pixels per VP8 macroblock (16x16): the unit of ``max-fs``.
MACROBLOCK = 16
#: Frame rate advertised in ``max-fr``: what a camera sends for a consult, and more than the masking keeps up with.
MAX_FRAME_RATE = 30
#: The start code every VP8 keyframe carries after its 3-byte frame tag (RFC 6386, 9.1).
VP8_START_CODE = b"\x9d\x01\x2a"
_QUEUE_ATTRIBUTE = "_RTCRtpReceiver__decoder_queue"


def macroblocks(width: int, height: int) -> int:
    """16x16 macroblocks covering a ``width`` x ``height`` picture."""
    return math.ceil(width / MACROBLOCK) * math.ceil(height / MACROBLOCK)


def max_fs(max_pixels: int) -> int:
    """``max-fs`` for a cap of ``max_pixels`` (1920x1088 -> 8160 macroblocks)."""
    return max(1, max_pixels // (MACROBLOCK * MACROBLOCK))


def allowed(width: int, height: int, max_fs_mb: int) -> bool:
    """Whether a ``width`` x ``height`` frame fits ``max-fs``: in area, and per side at most sqrt(8 max-fs)
    macroblocks (RFC 7741, 6.1), so no 16-pixel-high strip is thousands of macroblocks wide."""
    if width < 1 or height < 1:
        return False
    side = math.isqrt(8 * max_fs_mb)
    return (macroblocks(width, height) <= max_fs_mb and math.ceil(width / MACROBLOCK) <= side
            and math.ceil(height / MACROBLOCK) <= side)


def vp8_keyframe_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` a VP8 keyframe declares; None for an interframe (which cannot change the size).

    Raises ValueError for a keyframe whose header is cut short or lacks the start code.
    """
    if len(data) < 3 or data[0] & 1:  # frame tag bit 0: 0 = keyframe
        return None
    if len(data) < 10 or data[3:6] != VP8_START_CODE:
        raise ValueError("VP8 keyframe without a valid header")
    width = int.from_bytes(data[6:8], "little") & 0x3FFF  # the top 2 bits are a scaling hint
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


def advertise(sdp: str, max_pixels: int, max_fr: int = MAX_FRAME_RATE) -> str:
    """``sdp`` (an answer) with ``max-fs`` and ``max-fr`` in the fmtp of every VP8 payload type."""
    limits = f"max-fs={max_fs(max_pixels)};max-fr={max_fr}"
    lines = sdp.split("\r\n")
    vp8 = {m.group(1) for line in lines if (m := re.match(r"a=rtpmap:(\d+) VP8/90000$", line, re.I))}
    with_fmtp = {m.group(1) for line in lines if (m := re.match(r"a=fmtp:(\d+) ", line)) and m.group(1) in vp8}
    out = []
    for line in lines:
        fmtp = re.match(r"a=fmtp:(\d+) ", line)
        if fmtp and fmtp.group(1) in vp8 and "max-fs=" not in line:
            line = f"{line};{limits}"
        out.append(line)
        rtpmap = re.match(r"a=rtpmap:(\d+) VP8/90000$", line, re.I)
        if rtpmap and rtpmap.group(1) not in with_fmtp:
            out.append(f"a=fmtp:{rtpmap.group(1)} {limits}")
    return "\r\n".join(out)


class GuardedDecoderQueue:
    """Stands in for a receiver's decoder queue: VP8 keyframes over the cap never reach the decoder.

    ``put`` runs on the event loop (one header check per complete frame); ``get`` is the decoder
    thread's, passed through. ``on_refused(width, height)`` hears of each dropped keyframe (0 x 0 for
    a broken header).
    """

    def __init__(self, inner: queue.Queue[Any], max_fs_mb: int, on_refused: Callable[[int, int], None],
                 meter: ByteRate | None = None) -> None:
        self.inner = inner
        self.max_fs = max_fs_mb
        self.on_refused = on_refused
        self.refused = 0
        self.meter = meter  #: hears the size of every frame passed to the decoder

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, frame = item
            if codec.mimeType.lower() == "video/vp8":
                try:
                    size = vp8_keyframe_size(bytes(frame.data))
                except ValueError:
                    size = (0, 0)
                if size is not None and not allowed(*size, self.max_fs):
                    self.refused += 1
                    self.on_refused(*size)
                    return
            if self.meter is not None:
                self.meter.record(len(frame.data))
        self.inner.put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.inner.get(block, timeout)


def guard(receiver: RTCRtpReceiver, max_pixels: int, on_refused: Callable[[int, int], None],
          meter: ByteRate | None = None) -> GuardedDecoderQueue:
    """Filter what ``receiver`` decodes; call before its connection starts (idempotent).

    ``meter`` hears the size of each frame that goes on to the decoder (the stream's bitrate).

    Raises RuntimeError when aiortc no longer has the decoder queue this relies on: better no consult
    than one whose decoder takes any size.
    """
    current = getattr(receiver, _QUEUE_ATTRIBUTE, None)
    if isinstance(current, GuardedDecoderQueue):
        return current
    if not isinstance(current, queue.Queue):
        raise RuntimeError("aiortc's RTCRtpReceiver has no decoder queue to guard; see proxy/consult/decode_guard.py")
    guarded = GuardedDecoderQueue(current, max_fs(max_pixels), on_refused, meter)
    setattr(receiver, _QUEUE_ATTRIBUTE, guarded)
    return guarded

"""The aiortc internals the proxy relies on to cost less, all in one place.

Each function here reaches into aiortc 1.x below its public API; each is
checked by tests/consult/test_aiortc_speedups.py, which fails when aiortc
changes underneath it, and each raises RuntimeError (rather than silently doing
nothing) when the attribute it needs is gone.

* :func:`compute_audio_level_dbov`: aiortc's RTP sender computes the RFC 6465
  audio level of every outgoing audio frame with a Python loop over its samples
  (``aiortc.rtp.compute_audio_level_dbov``): about 0.2 ms of held GIL per 20 ms
  frame, per audio sender. The numpy version returns the same value.
* :func:`relay_encoded`: a receiver whose audio is only relayed hands its track
  the Opus packets as they arrive (``av.Packet``), instead of decoding them in
  its thread for a sender to encode again: the relay then costs no codec work
  at all, and what is heard is what the other side sent.
* :func:`on_keyframe_request` and :func:`on_bitrate_estimate`: a sender whose
  track yields encoded packets (``proxy.consult.encoding``) does not encode, so
  the receiver's requests for a keyframe (PLI, FIR) and its bitrate estimate
  (REMB) must reach the encoder that does.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import queue
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiortc import rtp
from aiortc.codecs.vpx import DEFAULT_BITRATE, Vp8Encoder
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

MAX_SAMPLE_VALUE = 32767
MIN_AUDIO_LEVEL = -127
#: Encoded audio frames a relayed receiver keeps for its reader (0.2 s of 20 ms packets): older ones are dropped,
#: so audio that nobody read for a while (the other side not connected yet) is not played late.
MAX_RELAY_BACKLOG = 10

_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_SENDER_ENCODER = "_RTCRtpSender__encoder"
_original = rtp.compute_audio_level_dbov


def compute_audio_level_dbov(frame: object) -> int:
    """RFC 6465 Appendix A, as aiortc computes it (all samples of plane 0 over ``frame.samples``)."""
    samples = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.int64)  # type: ignore[attr-defined]
    energy = int(np.dot(samples, samples))  # integers: exact, and no BLAS call
    rms = math.sqrt(energy / (frame.samples * MAX_SAMPLE_VALUE * MAX_SAMPLE_VALUE))  # type: ignore[attr-defined]
    if rms > 0:
        return round(min(max(20 * math.log10(rms), MIN_AUDIO_LEVEL), 0))
    return MIN_AUDIO_LEVEL


def install() -> None:
    """Use the numpy version in aiortc's RTP senders (idempotent)."""
    rtp.compute_audio_level_dbov = compute_audio_level_dbov


def original() -> object:
    return _original


class EncodedFrames:
    """Stands in for a receiver's decoder queue: complete frames go to its track undecoded.

    ``put`` runs on the event loop (aiortc's ``_handle_rtp_packet``, after its jitter buffer has
    put the frame together); ``get`` is the idle decoder thread's, which only ever sees the
    ``None`` that ends it (and then ends the track, as it would have).
    """

    def __init__(self, inner: Any, track: Any) -> None:
        self.inner = inner
        self._track_queue: asyncio.Queue[Any] = track._queue
        self.dropped = 0  #: frames dropped because nobody read them in time

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self.inner.put(None, block, timeout)
            return
        codec, encoded = item
        packet = av.Packet(encoded.data)
        packet.pts = encoded.timestamp
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        while self._track_queue.qsize() >= MAX_RELAY_BACKLOG:
            self._track_queue.get_nowait()
            self.dropped += 1
        self._track_queue.put_nowait(packet)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.inner.get(block, timeout)


def relay_encoded(receiver: RTCRtpReceiver) -> EncodedFrames | None:
    """Have ``receiver``'s track yield its encoded frames as ``av.Packet`` (pts on the codec's clock), undecoded.

    Call after the remote description is applied (the track exists) and before the connection
    starts its decoder; idempotent; None for a receiver that receives nothing (no track). Installs
    inside a decode guard (:mod:`proxy.consult.decode_guard`), which then still filters what arrives.
    """
    current = getattr(receiver, _DECODER_QUEUE, None)
    holder: Any = receiver
    attribute = _DECODER_QUEUE
    if current is not None and hasattr(current, "inner") and not isinstance(current, EncodedFrames):
        holder, attribute, current = current, "inner", current.inner  # a guard in front: relay behind it
    if isinstance(current, EncodedFrames):
        return current
    if not hasattr(receiver, "_track"):
        raise RuntimeError("aiortc's RTCRtpReceiver has no track slot; see proxy/consult/aiortc_speedups.py")
    track = receiver._track
    if track is None:
        return None  # the other side sends nothing here
    if not isinstance(current, queue.Queue) or not isinstance(getattr(track, "_queue", None), asyncio.Queue):
        raise RuntimeError("aiortc's RTCRtpReceiver has no decoder queue or track queue; "
                           "see proxy/consult/aiortc_speedups.py")
    relay = EncodedFrames(current, track)
    setattr(holder, attribute, relay)
    return relay


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever ``sender``'s receiver asks for a keyframe (RTCP PLI or FIR)."""
    original_request = getattr(sender, "_send_keyframe", None)
    if not callable(original_request):
        raise RuntimeError("aiortc's RTCRtpSender has no _send_keyframe; see proxy/consult/aiortc_speedups.py")

    def send_keyframe() -> None:
        original_request()
        callback()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


class EstimatingPacker(Vp8Encoder):
    """aiortc's VP8 packetizer for pre-encoded frames, passing on the receiver's bitrate estimate.

    aiortc's sender sets ``target_bitrate`` on its encoder when a REMB arrives; a sender of
    encoded packets only packs, so the estimate goes to ``report`` instead.
    """

    def __init__(self, report: Callable[[int], None]) -> None:
        super().__init__()
        self._report = report
        self._bitrate = DEFAULT_BITRATE

    @property
    def target_bitrate(self) -> int:  # type: ignore[override]
        return self._bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self._bitrate = bitrate
        self._report(bitrate)


def on_bitrate_estimate(sender: RTCRtpSender, report: Callable[[int], None]) -> EstimatingPacker:
    """Pass ``sender``'s receiver estimates (bits per second, from RTCP REMB) to ``report``.

    Gives the sender its VP8 packetizer before it starts; only for a sender whose track yields
    VP8 packets (``av.Packet``), which aiortc's sender packs without encoding.
    """
    if not hasattr(sender, _SENDER_ENCODER):
        raise RuntimeError("aiortc's RTCRtpSender has no encoder slot; see proxy/consult/aiortc_speedups.py")
    packer = EstimatingPacker(report)
    setattr(sender, _SENDER_ENCODER, packer)
    return packer

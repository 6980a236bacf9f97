"""The aiortc internals proxy.consult.aiortc_speedups relies on: each test fails when aiortc changes underneath.

Real aiortc objects throughout: senders and receivers of real peer connections, real RTCP packets through
the sender's own handler, and a real connection on loopback carrying Opus.
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket, pack_remb_fci

from proxy.consult import aiortc_speedups, decode_guard
from proxy.consult.tracks import opus_samples


def test_audio_level_matches_aiortc() -> None:
    rng = np.random.default_rng(4)
    for amplitude in (0, 1, 30, 1000, 12000, 32767):
        for layout, channels in (("mono", 1), ("stereo", 2)):
            samples = np.clip(rng.normal(0, amplitude, (1, 960 * channels)), -32768, 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
            frame.sample_rate = 48000
            assert aiortc_speedups.compute_audio_level_dbov(frame) == aiortc_speedups.original()(frame)


def test_install_replaces_the_helper_aiortc_calls() -> None:
    from aiortc import rtp

    aiortc_speedups.install()
    assert rtp.compute_audio_level_dbov is aiortc_speedups.compute_audio_level_dbov


async def test_keyframe_requests_and_bitrate_estimates_reach_the_shared_encoder() -> None:
    """PLI and FIR from the receiver call the hook; a REMB naming the sender reaches the packetizer's report."""
    pc = RTCPeerConnection()
    sender = pc.addTransceiver("video", direction="sendonly").sender
    requests: list[int] = []
    estimates: list[int] = []
    aiortc_speedups.on_keyframe_request(sender, lambda: requests.append(1))
    packer = aiortc_speedups.on_bitrate_estimate(sender, estimates.append)
    try:
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc))
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=sender._ssrc))
        await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0,
                                                        fci=pack_remb_fci(800_000, [sender._ssrc])))
        assert len(requests) == 2
        assert estimates == [800_000] and packer.target_bitrate == 800_000
        # the sender packs an encoded packet with that packetizer, without encoding, as for the shared stream
        packet = av.Packet(b"\x10\x02\x00" + bytes(50))
        packet.pts, packet.time_base = 3000, fractions.Fraction(1, 90000)

        class Encoded(MediaStreamTrack):
            kind = "video"

            async def recv(self) -> av.Packet:
                return packet

        sender.replaceTrack(Encoded())
        picture_id = packer.picture_id
        codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        encoded = await sender._next_encoded_frame(codec)
        assert encoded is not None and encoded.timestamp == 3000 and encoded.payloads[0].endswith(bytes(50))
        assert packer.picture_id == (picture_id + 1) % (1 << 15)  # our packetizer did it
    finally:
        await pc.close()


async def test_relayed_audio_arrives_encoded_and_is_never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a real connection, a relayed receiver's track yields the Opus packets as sent (valid Opus, 20 ms each,
    timestamps on the 48 kHz clock), its decoder never runs, and a decode guard in front still sees them first."""
    from aiortc.codecs.opus import OpusDecoder

    decoded: list[int] = []
    original = OpusDecoder.decode
    monkeypatch.setattr(OpusDecoder, "decode",
                        lambda self, frame: decoded.append(1) or original(self, frame))

    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    sender_pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await sender_pc.setLocalDescription(await sender_pc.createOffer())
    await receiver_pc.setRemoteDescription(sender_pc.localDescription)
    receiver = receiver_pc.getTransceivers()[0].receiver
    guard = decode_guard.guard(receiver, 1920 * 1088, lambda width, height: None)
    relay = aiortc_speedups.relay_encoded(receiver)
    assert aiortc_speedups.relay_encoded(receiver) is relay and guard.inner is relay  # idempotent, behind the guard
    await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
    await sender_pc.setRemoteDescription(receiver_pc.localDescription)
    packets: list[av.Packet] = []
    try:
        while len(packets) < 25:
            packets.append(await asyncio.wait_for(receiver.track.recv(), 10.0))
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    assert all(isinstance(p, av.Packet) for p in packets) and not decoded
    assert all(opus_samples(bytes(p)) == 960 for p in packets)
    steps = {b.pts - a.pts for a, b in zip(packets, packets[1:], strict=False)}
    assert steps == {960} and packets[0].time_base.denominator == 48000
    codec = av.CodecContext.create("libopus", "r")
    samples = sum(frame.samples for packet in packets[-5:] for frame in codec.decode(packet))
    assert samples >= 4 * 960  # what is relayed is valid Opus


async def test_a_relay_nobody_reads_keeps_only_the_newest_audio() -> None:
    """Audio that nobody relays yet (the other side not connected) is dropped after MAX_RELAY_BACKLOG packets:
    when the relay starts it plays the present, not seconds-old speech."""
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    other = RTCPeerConnection()
    await pc.setLocalDescription(await pc.createOffer())
    await other.setRemoteDescription(pc.localDescription)
    receiver = other.getTransceivers()[0].receiver
    relay = aiortc_speedups.relay_encoded(receiver)
    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, payloadType=111)
    for index in range(3 * aiortc_speedups.MAX_RELAY_BACKLOG):
        relay.put((codec, JitterFrame(bytes([0xFC, index]), index * 960)))
    try:
        queued = [receiver.track._queue.get_nowait() for _ in range(receiver.track._queue.qsize())]
        assert len(queued) == aiortc_speedups.MAX_RELAY_BACKLOG
        assert queued[-1].pts == (3 * aiortc_speedups.MAX_RELAY_BACKLOG - 1) * 960
        assert relay.dropped == 2 * aiortc_speedups.MAX_RELAY_BACKLOG
    finally:
        await pc.close()
        await other.close()


def test_opus_packet_durations() -> None:
    """opus_samples reads libopus's own 10, 20, 40 and 60 ms packets right."""
    for ms in (10, 20, 40, 60):
        codec = av.CodecContext.create("libopus", "w")
        codec.format, codec.layout, codec.sample_rate = "s16", "stereo", 48000
        codec.bit_rate = 64000
        codec.options = {"frame_duration": str(ms), "application": "voip"}
        samples = 48 * ms
        packets = []
        for index in range(6):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 2 * samples), np.int16), format="s16", layout="stereo")
            frame.sample_rate, frame.pts = 48000, index * samples
            packets += codec.encode(frame)
        assert packets and all(opus_samples(bytes(p)) == samples for p in packets), ms

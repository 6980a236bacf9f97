"""Security round 2 (issue 14), the media side: offers bound to their page's role, one negotiation per
role, every connection of a consult closed with it, a cap on what a client can make the proxy decode,
ICE candidates filtered, and data-channel sends that do not pile up behind a peer that stopped reading.

Real parts throughout: the proxy's app on 127.0.0.1, real aiortc peers (the product's scripted
participant), real VP8 packets on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect
import re
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, rtcrtpreceiver
from aiortc.codecs import vpx
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver

from proxy.consult import candidates, decode_guard, rooms
from proxy.consult.config import Config
from tests.rtc_client import Client, LocalProxy, NeutralPipeline, camera_pattern, distance, wait_for

KEY = "security-media-test-key-0123456789"
#: A received frame at least this far (mean absolute difference of 32x24 thumbnails) from the camera
#: picture is not the camera picture: the camera through VP8 sits within a few units of it.
NOT_THE_CAMERA = 60.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
async def proxy() -> AsyncIterator[LocalProxy]:
    async with LocalProxy(Config(api_key=KEY, peer_timeout=20.0), NeutralPipeline) as local:
        yield local


async def page_offer(role: str) -> str:
    """A real aiortc offer with the m-lines of ``role``'s page (the peer is closed again)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendrecv")
    pc.addTransceiver("audio", direction="sendrecv")
    if role == "patient":
        pc.addTransceiver("video", direction="recvonly")  # the doctor's camera
    pc.createDataChannel("mask")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post_offer(proxy: LocalProxy, session: aiohttp.ClientSession, room: str, body: dict[str, object]
                     ) -> tuple[int, dict[str, object]]:
    async with session.post(f"{proxy.base}/api/rooms/{room}/offer", json=body) as response:
        return response.status, await response.json()


# -- 14.1: a token of the wrong role -------------------------------------------------------------------


async def test_offer_names_its_role_and_a_token_of_the_other_role_is_refused(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    room = await proxy.create_room(session)
    live = proxy.registry.get(room["room"])
    patient_sdp, doctor_sdp = await page_offer("patient"), await page_offer("doctor")
    # the doctor's link opened on the patient page, and the other way round: 403, saying whose link it is
    status, body = await post_offer(proxy, session, room["room"], {
        "token": room["doctor_token"], "role": "patient", "sdp": patient_sdp, "type": "offer"})
    assert status == 403 and "for the doctor's page" in str(body["error"]), body
    status, body = await post_offer(proxy, session, room["room"], {
        "token": room["patient_token"], "role": "doctor", "sdp": doctor_sdp, "type": "offer"})
    assert status == 403 and "for the patient's page" in str(body["error"]), body
    # no role, or one that is not a page: 400
    for role in (None, "", "admin", ["patient"], 1):
        offer: dict[str, object] = {"token": room["patient_token"], "sdp": patient_sdp, "type": "offer"}
        if role is not None:
            offer["role"] = role
        status, body = await post_offer(proxy, session, room["room"], offer)
        assert status == 400 and "role" in str(body["error"]), (role, body)
    # in depth: the patient page's offer (it asks for the doctor's camera) is never answered as the doctor,
    # whatever the request claims
    status, body = await post_offer(proxy, session, room["room"], {
        "token": room["doctor_token"], "role": "doctor", "sdp": patient_sdp, "type": "offer"})
    assert status == 400 and "patient page" in str(body["error"]), body
    assert not live.peers, "a refused offer left a peer behind"
    # the right pairs are answered, and the answer confirms the role (the pages check it)
    for role, sdp in (("patient", patient_sdp), ("doctor", doctor_sdp)):
        status, body = await post_offer(proxy, session, room["room"], {
            "token": room[f"{role}_token"], "role": role, "sdp": sdp, "type": "offer"})
        assert status == 200 and body["role"] == role and body["type"] == "answer", body


async def test_a_camera_sent_with_the_doctors_link_reaches_no_one(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    """A patient whose page got the doctor's link: refused, and the other participant never sees that camera."""
    room = await proxy.create_room(session)
    victim = proxy.client(room, "patient", thumbs=True)
    confused = Client(proxy.base, room["room"], room["doctor_token"], "patient", frames=[camera_pattern()], fps=15)
    try:
        await victim.connect(session)
        with pytest.raises(RuntimeError, match="403"):
            await confused.connect(session)
        await wait_for(lambda: victim.receivers.get("doctor_video") and victim.receivers["doctor_video"].count > 30,
                       20)
        thumbs = victim.receivers["doctor_video"].thumbs
        nearest = min(distance(t, camera_pattern()) for t in thumbs)
        assert nearest > NOT_THE_CAMERA, f"a frame the victim received is the camera picture ({nearest:.1f})"
        assert "doctor" not in proxy.registry.get(room["room"]).peers
    finally:
        for client in (victim, confused):
            await client.close()


# -- 14.2: concurrent offers for one role -------------------------------------------------------------


async def receiving(clients: list[Client], name: str, seconds: float = 2.0) -> list[Client]:
    """The clients whose ``name`` stream (``masked``: what the proxy sends them) grew over ``seconds``."""
    before = [c.receivers[name].count if name in c.receivers else 0 for c in clients]
    await asyncio.sleep(seconds)
    return [c for c, n in zip(clients, before, strict=True) if name in c.receivers and c.receivers[name].count > n]


def mask_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mask-worker" and t.is_alive()]


async def test_concurrent_offers_leave_one_connection_per_role_and_delete_closes_them_all(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    room = await proxy.create_room(session)
    live = proxy.registry.get(room["room"])
    first = proxy.client(room, "doctor")
    doctors = [first] + [proxy.client(room, "doctor") for _ in range(4)]
    patients = [proxy.client(room, "patient", frames=[camera_pattern(160, 120)], fps=10) for _ in range(3)]
    try:
        await first.connect(session)
        await first.wait_connected()
        # four doctor offers and three patient offers at once, while a doctor is connected
        # (each is answered in turn; which one ends up connected does not matter, that only one does)
        await asyncio.gather(*(client.connect(session) for client in doctors[1:] + patients), return_exceptions=True)
        await wait_for(lambda: any(c.receivers.get("masked") and c.receivers["masked"].count > 10
                                   for c in doctors), 20)
        await wait_for(lambda: any(c.receivers.get("masked") and c.receivers["masked"].count > 5
                                   for c in patients), 20)
        await asyncio.sleep(1.0)  # a displaced connection's last frames in flight
        assert len(await receiving(doctors, "masked")) == 1, "more than one doctor connection gets the patient"
        assert len(await receiving(doctors, "audio")) == 1, "more than one doctor connection gets the patient's audio"
        assert len(await receiving(patients, "masked")) == 1, "more than one patient connection is served"
        assert len(live.connections) == 2 and {p.pc for p in live.peers.values()} == live.connections
        assert len(mask_workers()) == 1

        pcs = set(live.connections)
        async with session.delete(f"{proxy.base}/api/rooms/{room['room']}",
                                  headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status == 200
        await asyncio.sleep(0.5)
        assert not await receiving(doctors + patients, "masked"), "a connection still gets media after DELETE"
        assert not await receiving(doctors, "audio", 1.0)
        assert all(pc.connectionState == "closed" for pc in pcs) and not live.connections
        assert not mask_workers(), "a masking worker still runs for the deleted room"
    finally:
        for client in doctors + patients:
            await client.close()


async def test_a_late_offer_for_a_closed_room_starts_no_worker(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    """A patient offer still being answered when its room is deleted: 404, and no worker starts, then or later."""
    room = await proxy.create_room(session)
    live = proxy.registry.get(room["room"])
    patient = proxy.client(room, "patient", frames=[camera_pattern(160, 120)], fps=10)
    try:
        offer = asyncio.create_task(patient.connect(session))
        await wait_for(lambda: live.peers, 5, step=0.001)
        async with session.delete(f"{proxy.base}/api/rooms/{room['room']}",
                                  headers={"Authorization": f"Bearer {KEY}"}) as response:
            assert response.status == 200
        try:
            await offer  # answered before the delete landed, or refused
        except RuntimeError as exc:
            assert "404" in str(exc)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert not mask_workers(), "a worker started for a closed room"
            await asyncio.sleep(0.1)
        assert not live.connections and not live.peers
    finally:
        await patient.close()


async def test_a_close_cut_short_still_releases_the_worker_and_connections(
        proxy: LocalProxy, session: aiohttp.ClientSession) -> None:
    """A shutdown during an expiry, or a client gone mid-DELETE, cancels a room's close half-way. The room is
    marked closed by then, so nothing else would ever stop its worker or close its connections."""
    room = await proxy.create_room(session)
    live = proxy.registry.get(room["room"])
    doctor = proxy.client(room, "doctor")
    patient = proxy.client(room, "patient", frames=[camera_pattern(160, 120)], fps=10)
    try:
        await doctor.connect(session)
        await patient.connect(session)
        await wait_for(lambda: doctor.receivers.get("masked") and doctor.receivers["masked"].count > 5, 20)
        assert len(mask_workers()) == 1
        closing = asyncio.create_task(proxy.registry.remove(room["room"], "expired"))
        await asyncio.sleep(0.05)  # inside the wait that lets the pages' "ended" notice leave
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        await wait_for(lambda: not mask_workers(), 3, step=0.05)
        assert not live.connections and not live.peers
    finally:
        await doctor.close()
        await patient.close()


# -- 14.3: a cap on what a client can make the proxy decode --------------------------------------------


def vp8_keyframes(width: int, height: int, count: int) -> list[bytes]:
    """``count`` real VP8 keyframes of a ``width`` x ``height`` camera picture, encoded by libvpx."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 30)
    encoder.options = {"deadline": "realtime", "kf-max-dist": "1"}
    out = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.roll(camera_pattern(width, height), i, axis=1), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.pict_type = i, av.video.frame.PictureType.I
        out += [bytes(p) for p in encoder.encode(frame)]
    out += [bytes(p) for p in encoder.encode(None)]
    assert all(decode_guard.vp8_keyframe_size(k) == (width, height) for k in out)
    return out


def declaring(keyframe: bytes, width: int, height: int) -> bytes:
    """``keyframe`` with its header declaring ``width`` x ``height`` (the rest unchanged: not decodable as such)."""
    return keyframe[:6] + width.to_bytes(2, "little") + height.to_bytes(2, "little") + keyframe[10:]


class EncodedTrack(MediaStreamTrack):
    """A camera that sends the given VP8 frames as they are (aiortc packs av.Packets without encoding)."""

    kind = "video"

    def __init__(self, frames: list[bytes], fps: float = 15.0) -> None:
        super().__init__()
        self.frames, self.fps, self.sent = frames, fps, 0
        self.go = asyncio.Event()  #: set to start sending

    async def recv(self) -> av.Packet:
        await self.go.wait()
        await asyncio.sleep(1 / self.fps)
        packet = av.Packet(self.frames[min(self.sent, len(self.frames) - 1)])
        packet.pts, packet.time_base = self.sent * 6000, fractions.Fraction(1, 90000)
        self.sent += 1
        return packet


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 1e6


def test_keyframe_header_parsing_and_the_cap() -> None:
    key = vp8_keyframes(64, 48, 1)[0]
    assert decode_guard.vp8_keyframe_size(key) == (64, 48)
    assert decode_guard.vp8_keyframe_size(declaring(key, 16000, 16000)) == (16000, 16000)
    assert decode_guard.vp8_keyframe_size(b"\x01\x00\x00" + b"\x00" * 20) is None  # an interframe
    with pytest.raises(ValueError):
        decode_guard.vp8_keyframe_size(key[:3] + b"\x00\x00\x00" + key[6:])  # no start code
    fs = decode_guard.max_fs(1920 * 1088)
    assert fs == 8160
    assert decode_guard.allowed(1920, 1080, fs) and decode_guard.allowed(1080, 1920, fs)
    assert not decode_guard.allowed(1920, 1200, fs) and not decode_guard.allowed(16000, 16000, fs)
    assert not decode_guard.allowed(16000, 16, fs)  # a strip: small in area, too wide per side
    assert not decode_guard.allowed(0, 0, fs)


async def test_decode_guard_still_fits_aiortc() -> None:
    """The one aiortc internal the guard relies on: the receiver's decoder queue (fails when aiortc changes it)."""
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video").receiver
    assert isinstance(receiver, RTCRtpReceiver)
    guarded = decode_guard.guard(receiver, 1920 * 1088, lambda w, h: None)
    assert receiver._RTCRtpReceiver__decoder_queue is guarded  # type: ignore[attr-defined]
    assert decode_guard.guard(receiver, 1920 * 1088, lambda w, h: None) is guarded  # idempotent
    worker = inspect.getsource(rtcrtpreceiver.decoder_worker)
    assert "input_q.get()" in worker and "decoder.decode(encoded_frame)" in worker
    handler = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__decoder_queue.put((codec, encoded_frame))" in handler
    await pc.close()


async def test_an_oversized_keyframe_is_dropped_before_decoding(
        proxy: LocalProxy, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera whose keyframes declare 16000x16000: none reaches the decoder, each is counted, memory stays
    flat; the same camera's real 320x240 keyframes afterwards are decoded and masked (the path is live)."""
    decoded: list[tuple[int, int] | None] = []
    original = vpx.Vp8Decoder.decode

    def spy(self: vpx.Vp8Decoder, encoded_frame: object) -> list[object]:
        decoded.append(decode_guard.vp8_keyframe_size(bytes(encoded_frame.data)))  # type: ignore[attr-defined]
        return original(self, encoded_frame)  # type: ignore[arg-type]

    monkeypatch.setattr(vpx.Vp8Decoder, "decode", spy)
    good = vp8_keyframes(320, 240, 10)
    bad = [declaring(k, 16000, 16000) for k in good]
    camera = EncodedTrack(bad + good)
    room = await proxy.create_room(session)
    live = proxy.registry.get(room["room"])
    patient = proxy.client(room, "patient")
    patient.camera = camera  # type: ignore[assignment]
    peak = [0.0]
    sampling = True

    def sample() -> None:
        while sampling:
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        await patient.connect(session)
        await patient.wait_connected()
        await asyncio.sleep(0.5)
        baseline = peak[0] = rss_mb()
        sampler.start()
        camera.go.set()
        answer = patient.pc.remoteDescription.sdp
        vp8 = re.findall(r"a=rtpmap:(\d+) VP8/90000", answer)
        assert vp8 and all(re.search(rf"a=fmtp:{pt} .*max-fs=8160;max-fr=30", answer) for pt in vp8), answer
        await wait_for(lambda: camera.sent > len(bad), 20)
        bad_seen = live.refused_keyframes
        peak_bad = peak[0]
        await wait_for(lambda: live.stats.frames >= 3, 20)  # the good keyframes that follow are masked
    finally:
        sampling = False
        await patient.close()
    # (the spy also sees this process's client decoding what the proxy sends it: small pictures)
    too_big = {size for size in decoded if size is not None and not decode_guard.allowed(*size, 8160)}
    assert not too_big, f"a decoder was handed keyframes declaring {too_big}"
    assert peak_bad - baseline < 50, f"memory grew {peak_bad - baseline:.0f} MB while the oversized keyframes came"
    assert bad_seen >= len(bad) - 2, f"only {bad_seen} of {len(bad)} oversized keyframes were refused"
    assert proxy.registry.get(room["room"]).state()["media"]["refused_keyframes"] == live.refused_keyframes
    async with session.get(f"{proxy.base}/metrics") as response:
        assert re.search(rf"^maskproxy_refused_keyframes_total {float(live.refused_keyframes)}$",
                         await response.text(), re.M)


# -- 14.7: ICE candidates of offers ---------------------------------------------------------------------


def candidate(address: str, port: int = 50000, foundation: str = "1") -> str:
    return f"a=candidate:{foundation} 1 udp 2130706431 {address} {port} typ host"


def test_candidate_filter() -> None:
    public = ["203.0.113.7", "2001:db8::7", "8.8.8.8"]
    always = {"0.0.0.0": "unspecified", "::": "unspecified", "169.254.10.1": "link-local", "fe80::1": "link-local",
              "224.0.0.251": "multicast", "ff02::fb": "multicast", "255.255.255.255": "reserved",
              "240.0.0.1": "reserved", "intranet.clinic.example": "host name", "a.b.local": "host name"}
    private = ["10.1.2.3", "172.20.0.5", "192.168.1.20", "100.64.0.1", "fd00::5", "4b4a8c1e-2f3a-4d5e.local"]
    for address in public:
        assert candidates.refusal(address, allow_loopback=False, refuse_private=True) is None, address
    for address, reason in always.items():
        for allow, refuse in ((False, False), (True, False), (True, True)):
            assert candidates.refusal(address, allow, refuse) == reason, address
    for address in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"):
        assert candidates.refusal(address, allow_loopback=False, refuse_private=False) == "loopback", address
        assert candidates.refusal(address, allow_loopback=True, refuse_private=False) is None, address
    for address in private:
        assert candidates.refusal(address, allow_loopback=False, refuse_private=False) is None, address
        assert candidates.refusal(address, allow_loopback=False, refuse_private=True) == "private", address
    assert candidates.listens_on_loopback("127.0.0.1") and candidates.listens_on_loopback("localhost")
    assert not candidates.listens_on_loopback("0.0.0.0") and not candidates.listens_on_loopback("192.0.2.1")

    lines = [candidate(f"203.0.113.{i}", foundation=str(i)) for i in range(40)]
    lines += [candidate("127.0.0.1"), candidate("10.0.0.1"), "a=candidate:1 1 udp 1 203.0.113.1 0 typ host",
              "a=candidate:broken"]
    sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" + "\r\n".join(lines) + "\r\na=end-of-candidates\r\n"
    filtered, dropped = candidates.filter_offer(sdp, allow_loopback=False, refuse_private=True)
    kept = [line for line in filtered.splitlines() if line.startswith("a=candidate:")]
    assert kept == lines[:candidates.MAX_CANDIDATES]
    assert dropped == {"over the cap": 8, "loopback": 1, "private": 1, "malformed": 2}
    assert "a=end-of-candidates" in filtered and filtered.startswith("v=0\r\nm=audio")
    # any line break counts, as aiortc's parser splits lines: a bare \n does not smuggle a candidate through
    filtered, dropped = candidates.filter_offer(sdp.replace("\r\n", "\n"), allow_loopback=False)
    assert "127.0.0.1" not in filtered and dropped["loopback"] == 1


class Probe(asyncio.DatagramProtocol):
    """A UDP port that records what arrives."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


async def probe_offer(proxy: LocalProxy, session: aiohttp.ClientSession, port: int) -> RTCPeerConnection:
    """A doctor's real offer with one more candidate: a loopback port the proxy has no business reaching.

    The answer is not applied, so no pair succeeds and the proxy's ICE agent goes on to check every one."""
    room = await proxy.create_room(session)
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp.replace("a=end-of-candidates", candidate("127.0.0.1", port, "999") +
                                          "\r\na=end-of-candidates", 1)
    async with session.post(f"{proxy.base}/api/rooms/{room['room']}/offer",
                            json={"token": room["doctor_token"], "role": "doctor", "sdp": sdp, "type": "offer"}) as r:
        assert r.status == 200, await r.text()
    return pc


async def test_the_proxy_does_not_probe_loopback_candidates(session: aiohttp.ClientSession) -> None:
    """An offer listing 127.0.0.1:PORT: a proxy on a public address sends nothing there; one listening on
    loopback (development) does, which shows the probe would be seen."""
    loop = asyncio.get_running_loop()
    for host, expect_probes in (("0.0.0.0", False), ("127.0.0.1", True)):
        transport, probe = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        client = None
        try:
            async with LocalProxy(Config(api_key=KEY, host=host), NeutralPipeline) as proxy:
                client = await probe_offer(proxy, session, port)
                server_pc = next(iter(next(iter(proxy.registry.rooms.values())).connections))
                remote = server_pc.getTransceivers()[0].receiver.transport.transport.getRemoteCandidates()
                assert ("127.0.0.1" in {c.ip for c in remote}) is expect_probes, (host, remote)
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and not probe.received:
                    await asyncio.sleep(0.1)
        finally:
            transport.close()
            if client is not None:
                await client.close()
        assert bool(probe.received) is expect_probes, (host, len(probe.received))


# -- 14.11: data-channel sends to a peer that stopped reading -------------------------------------------


async def test_sends_to_a_backed_up_channel_are_skipped_and_counted(
        proxy: LocalProxy, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor's browser vanishes (its sockets close; the proxy notices only after peer_timeout): the
    proxy's queue for its data channel stops growing at the threshold, and the skipped messages are counted."""
    limit = 4096
    monkeypatch.setattr(rooms, "MAX_CHANNEL_BUFFER", limit)  # (the default, 256 KiB, takes ~8 s to fill)
    room = await proxy.create_room(session)
    live = proxy.registry.get(room["room"])
    doctor = proxy.client(room, "doctor")
    patient = proxy.client(room, "patient", frames=[camera_pattern(160, 120)], fps=20)
    try:
        await doctor.connect(session)
        await patient.connect(session)
        await wait_for(lambda: len(doctor.params()) > 10, 20)  # mask parameters arrive
        channel = live.peers["doctor"].channel
        doctor.abort()
        await wait_for(lambda: live.channel_skipped > 0, 10, step=0.05)
        buffered = []
        for _ in range(20):  # 2 s: at 20 frames a second, some 40 more messages were due
            await asyncio.sleep(0.1)
            buffered.append(channel.bufferedAmount)
        skipped = live.channel_skipped
        assert max(buffered) <= limit + 2048, f"the channel's queue grew to {max(buffered)} bytes"
        assert skipped >= 20, f"only {skipped} sends were skipped"
        state = live.state()["media"]
        assert state["channel_skipped"] >= skipped and "doctor" in live.peers  # still waiting for peer_timeout
        async with session.get(f"{proxy.base}/metrics") as response:
            found = re.search(r"^maskproxy_channel_skipped_total (\S+)$", await response.text(), re.M)
            assert found and float(found.group(1)) >= skipped
    finally:
        await patient.close()
        await doctor.close()

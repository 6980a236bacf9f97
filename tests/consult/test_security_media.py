"""Security round 2 (issue 14), the media side: offers bound to their page's role, one negotiation per
role, every connection of a consult closed with it, a cap on what a client can make the proxy decode,
ICE candidates filtered, and data-channel sends that do not pile up behind a peer that stopped reading.

Real parts throughout: the proxy's app on 127.0.0.1, real aiortc peers (the product's scripted
participant), real VP8 packets on the wire.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiortc import RTCPeerConnection

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

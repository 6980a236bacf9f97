"""How a consult ends, as the pages hear it on their data channel (real aiortc peers, a stand-in pipeline).

The pages must not learn that a consult is over from broken connections and 404s: the proxy tells each
side ``{"ended": "deleted"|"expired"}`` before it closes their connections, warns them
(``{"expires_in": seconds}``) before the maximum lifetime, and tells one side ``{"left": role}`` when the
other leaves, whether its page said so (``{"leaving": true}``) or it fell silent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.consult.config import Config
from proxy.consult.rooms import EXPIRY_WARNING_S
from tests.rtc_client import Client, LocalProxy, NeutralPipeline, camera_pattern, wait_for

KEY = "ending-test-key-0123456789"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


async def join(proxy: LocalProxy, session: aiohttp.ClientSession, room: dict[str, str]) -> tuple[Client, Client]:
    """Both sides connected, their data channels open at both ends."""
    doctor = proxy.client(room, "doctor")
    patient = proxy.client(room, "patient", frames=[camera_pattern(160, 120)], fps=15)
    await doctor.connect(session)
    await patient.connect(session)
    live = proxy.registry.get(room["room"])
    assert live is not None

    def channels_open() -> bool:
        peers = [live.peers.get(role) for role in ("patient", "doctor")]
        return all(p is not None and p.channel is not None and p.channel.readyState == "open" for p in peers) \
            and all(c.channel.readyState == "open" for c in (doctor, patient))

    await wait_for(channels_open, 15)
    return doctor, patient


def notices(client: Client, key: str) -> list[dict[str, Any]]:
    return [m for m in client.messages if key in m]


async def test_delete_tells_both_pages_before_closing_their_connections(session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        doctor, patient = await join(proxy, session, room)
        # record the connection state at the moment each notice arrives
        states: dict[str, str] = {}
        for who, client in (("doctor", doctor), ("patient", patient)):
            client.channel.on("message", lambda message, who=who, client=client: states.setdefault(
                who, client.pc.connectionState) if "ended" in json.loads(message) else None)
        try:
            async with session.delete(f"{proxy.base}/api/rooms/{room['room']}",
                                      headers={"Authorization": f"Bearer {KEY}"}) as response:
                assert response.status == 200, await response.text()
            await wait_for(lambda: len(states) == 2, 3)
            for client in (doctor, patient):
                assert notices(client, "ended") == [{"ended": "deleted"}]
                assert not notices(client, "left"), "a deleted consult is not someone leaving"
            assert states == {"doctor": "connected", "patient": "connected"}, \
                f"the notice came after the connection closed: {states}"
            async with session.get(f"{proxy.base}/api/rooms/{room['room']}",
                                   headers={"Authorization": f"Bearer {room['patient_token']}"}) as response:
                assert response.status == 404
        finally:
            await doctor.close()
            await patient.close()


async def test_expiry_is_announced_then_ends_the_consult(session: aiohttp.ClientSession) -> None:
    """A consult 7 s from its maximum lifetime: both pages are warned at once, then told it expired."""
    async with LocalProxy(Config(api_key=KEY, room_max_lifetime=7.0), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        doctor, patient = await join(proxy, session, room)
        try:
            await wait_for(lambda: all(notices(c, "expires_in") for c in (doctor, patient)), 3)
            for client in (doctor, patient):
                warning = notices(client, "expires_in")
                assert len(warning) == 1, f"warned more than once: {warning}"
                assert 0 <= warning[0]["expires_in"] <= 7 < EXPIRY_WARNING_S
            await wait_for(lambda: all(notices(c, "ended") for c in (doctor, patient)), 10)
            for client in (doctor, patient):
                assert notices(client, "ended") == [{"ended": "expired"}]
            assert proxy.registry.get(room["room"]) is None
        finally:
            await doctor.close()
            await patient.close()


async def test_a_page_that_says_it_is_leaving_is_released_at_once(session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        doctor, patient = await join(proxy, session, room)
        try:
            patient.channel.send(json.dumps({"leaving": True}))
            took = await wait_for(lambda: notices(doctor, "left"), 2, step=0.05)
            assert notices(doctor, "left") == [{"left": "patient"}]
            state = await proxy.state(session, room)
            assert state["patient"] == {"connected": False, "state": "none"}, state
            assert state["doctor"]["connected"] is True
            assert not notices(doctor, "ended")
            print(f"\ndoctor told the patient left {took:.2f} s after the patient's page said so")
            # junk on the channel changes nothing
            for junk in ("not json", json.dumps({"leaving": "yes"}), json.dumps([1]), "x" * 5000):
                doctor.channel.send(junk)
            await asyncio.sleep(0.5)
            assert (await proxy.state(session, room))["doctor"]["connected"] is True
        finally:
            await doctor.close()
            await patient.close()


async def test_a_silent_page_counts_as_left(session: aiohttp.ClientSession) -> None:
    """The doctor's browser vanishes (no goodbye): after peer_timeout the patient hears that the doctor left."""
    async with LocalProxy(Config(api_key=KEY, peer_timeout=3.0), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        doctor, patient = await join(proxy, session, room)
        try:
            doctor.abort()
            await wait_for(lambda: notices(patient, "left"), 10)
            assert notices(patient, "left") == [{"left": "doctor"}]
            assert patient.pc.connectionState == "connected"
        finally:
            await doctor.close()
            await patient.close()


async def test_room_state_says_whose_link_the_token_is(session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        for role in ("patient", "doctor"):
            async with session.get(f"{proxy.base}/api/rooms/{room['room']}",
                                   headers={"Authorization": f"Bearer {room[f'{role}_token']}"}) as response:
                assert response.status == 200
                assert (await response.json())["role"] == role
        async with session.get(f"{proxy.base}/api/rooms/{room['room']}",
                               headers={"Authorization": "Bearer not-a-token-of-this-room"}) as response:
            assert response.status == 403
            assert "error" in await response.json()

"""The live proxy through its HTTP API, with real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from proxy.consult.config import Config
from proxy.consult.server import create_app
from tests.rtc_client import Client

KEY = "test-key-0123456789"


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    config = Config(api_key=KEY, max_consults=3, peer_timeout=3.0)
    test_server = TestServer(create_app(config), host="127.0.0.1")
    await test_server.start_server()
    yield test_server
    await test_server.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create(server: TestServer, session: aiohttp.ClientSession) -> dict[str, str]:
    async with session.post(url(server, "/api/rooms"), headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 201
        return await response.json()


@pytest.fixture(scope="module")
def camera_frames(videos_dir: Path) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(videos_dir / "d6.mp4" if (videos_dir / "d6.mp4").exists() else
                     sorted(videos_dir.glob("*.mp4"))[0])) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(width=640, height=480, format="rgb24"))
            if len(frames) >= 150:
                break
    return frames


async def test_create_room_and_tokens(server: TestServer, session: aiohttp.ClientSession) -> None:
    room = await create(server, session)
    assert set(room) == {"room", "patient_token", "doctor_token", "patient_url", "doctor_url"}
    assert room["patient_token"] != room["doctor_token"]
    assert len(room["patient_token"]) >= 22  # >= 128 bits in url-safe base64
    assert room["patient_url"].endswith(f"/patient#room={room['room']}&token={room['patient_token']}")
    async with session.get(url(server, f"/api/rooms/{room['room']}"), headers=bearer(room["doctor_token"])) as r:
        state = await r.json()
    assert r.status == 200
    assert state["patient"]["connected"] is False and state["doctor"]["connected"] is False
    assert {"fps", "dropped", "latency_ms"} <= set(state["mask"])


@pytest.mark.parametrize("headers,status", [({}, 401), ({"Authorization": "Bearer nope"}, 403),
                                            ({"Authorization": "Basic abc"}, 401)])
async def test_api_key_required(server: TestServer, session: aiohttp.ClientSession, headers: dict[str, str],
                                status: int) -> None:
    async with session.post(url(server, "/api/rooms"), headers=headers) as response:
        assert response.status == status
        assert "error" in await response.json()
    room = await create(server, session)
    async with session.delete(url(server, f"/api/rooms/{room['room']}"), headers=headers) as response:
        assert response.status == status


async def test_offer_errors(server: TestServer, session: aiohttp.ClientSession) -> None:
    room = await create(server, session)
    offer_url = url(server, f"/api/rooms/{room['room']}/offer")
    token = room["patient_token"]
    cases = [
        (b"{not json", 400),
        (json.dumps([1, 2]).encode(), 400),
        (json.dumps({"role": "patient", "sdp": "v=0\r\n", "type": "offer"}).encode(), 401),
        (json.dumps({"token": "guess", "role": "patient", "sdp": "v=0\r\n", "type": "offer"}).encode(), 403),
        (json.dumps({"token": token, "role": "patient", "sdp": "v=0\r\n", "type": "answer"}).encode(), 400),
        (json.dumps({"token": token, "role": "patient", "sdp": "hello", "type": "offer"}).encode(), 400),
        (json.dumps({"token": token, "role": "patient", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
                     "type": "offer"}).encode(), 400),
        (json.dumps({"token": token, "role": "patient", "sdp": "v=0\r\n" + "a=x\r\n" * 20000,
                     "type": "offer"}).encode(), 413),
    ]
    for body, status in cases:
        async with session.post(offer_url, data=body, headers={"Content-Type": "application/json"}) as response:
            payload = await response.json()
            assert response.status == status, (body[:60], payload)
            assert isinstance(payload["error"], str) and payload["error"]
    async with session.post(url(server, "/api/rooms/nosuchroom/offer"),
                            json={"token": token, "role": "patient", "sdp": "v=0\r\n", "type": "offer"}) as response:
        assert response.status == 404
    async with session.get(url(server, f"/api/rooms/{room['room']}"), headers=bearer("x")) as response:
        assert response.status == 403
    async with session.get(url(server, f"/api/rooms/{room['room']}")) as response:
        assert response.status == 401


async def test_capacity_and_delete(server: TestServer, session: aiohttp.ClientSession) -> None:
    rooms = [await create(server, session) for _ in range(3)]
    async with session.post(url(server, "/api/rooms"), headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 503
    async with session.delete(url(server, f"/api/rooms/{rooms[0]['room']}"),
                              headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 200
    async with session.get(url(server, f"/api/rooms/{rooms[0]['room']}"),
                           headers=bearer(rooms[0]["doctor_token"])) as response:
        assert response.status == 404
    async with session.delete(url(server, "/api/rooms/nosuchroom"),
                              headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status == 404
    await create(server, session)


async def test_pages_are_served(server: TestServer, session: aiohttp.ClientSession) -> None:
    for path in ("/", "/patient", "/doctor", "/static/js/rtc.js"):
        async with session.get(url(server, path)) as response:
            assert response.status == 200, path
    async with session.get(url(server, "/static/js/rtc.js")) as response:
        assert "javascript" in response.headers["Content-Type"]
    async with session.get(url(server, "/static/../pyproject.toml")) as response:
        assert response.status in (403, 404)


async def test_masked_consult(server: TestServer, session: aiohttp.ClientSession,
                              camera_frames: list[np.ndarray]) -> None:
    """The doctor receives the avatar (never the camera), the params and the patient's audio."""
    room = await create(server, session)
    base = str(server.make_url("")).rstrip("/")
    doctor = Client(base, room["room"], room["doctor_token"], "doctor")
    patient = Client(base, room["room"], room["patient_token"], "patient", frames=camera_frames)
    await doctor.connect(session, keep=20)
    await patient.connect(session, keep=5)
    try:
        await asyncio.sleep(8.0)
        masked = doctor.receivers["masked"]
        assert masked.fps() >= 15
        assert "audio" in doctor.receivers and doctor.receivers["audio"].count > 50
        params = doctor.params()
        with_face = [p for p in params if p["face"]]
        assert len(with_face) > 60
        assert {"right_gaze_yaw", "left_gaze_yaw", "right_aperture", "head_yaw"} <= set(with_face[-1])
        assert any("stats" in m for m in doctor.messages)
        # the patient sees the same masked stream as a self-view, and the mask state
        assert patient.receivers["masked"].count > 60
        assert any(p.get("face") for p in patient.params())
        # what arrives is the avatar: our tracker finds a face in it, and it is not any camera frame
        from proxy.tracking.tracker import FaceTracker

        tracker = FaceTracker(smoothing=False)
        found = 0
        small = [cv2.resize(f, (64, 48)).astype(np.int16) for f in camera_frames]
        for shown in masked.kept[-10:]:
            tracker.reset()
            found += tracker.process(shown) is not None
            thumb = cv2.resize(shown, (64, 48)).astype(np.int16)
            assert min(np.abs(thumb - s).mean() for s in small) > 12
        assert found >= 8
        async with session.get(url(server, f"/api/rooms/{room['room']}"),
                               headers=bearer(room["doctor_token"])) as response:
            state = await response.json()
        assert state["patient"]["connected"] and state["doctor"]["connected"]
        assert state["mask"]["fps"] >= 15
        assert 0 < state["mask"]["latency_ms"]["p50"] <= state["mask"]["latency_ms"]["p95"]
        assert state["mask"]["camera_kbps"] > 20  # the camera's VP8 as it reaches the decoder
    finally:
        await patient.close()
        await doctor.close()


async def test_reload_replaces_and_close_releases(server: TestServer, session: aiohttp.ClientSession,
                                                  camera_frames: list[np.ndarray]) -> None:
    room = await create(server, session)
    base = str(server.make_url("")).rstrip("/")
    first = Client(base, room["room"], room["patient_token"], "patient", frames=camera_frames)
    await first.connect(session)
    await asyncio.sleep(1.0)
    second = Client(base, room["room"], room["patient_token"], "patient", frames=camera_frames)
    await second.connect(session)
    await asyncio.sleep(3.0)
    assert second.receivers["masked"].count > 10
    # the first tab was told why it was closed, so it does not take the consult back
    assert {"replaced": True} in first.messages
    await first.close()
    await second.close()
    state_url = url(server, f"/api/rooms/{room['room']}")
    for _ in range(40):
        async with session.get(state_url, headers=bearer(room["doctor_token"])) as response:
            state = await response.json()
        if not state["patient"]["connected"]:
            break
        await asyncio.sleep(0.5)
    assert state["patient"]["connected"] is False

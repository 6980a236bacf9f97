"""The HTTP side of security issue 14, one section per finding: 4 tokens out of URLs, 6 ICE/TURN only for a
room's token holders. Against the real app on 127.0.0.1 (no media: these are HTTP properties)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from proxy.consult.config import Config
from proxy.consult.ice import ice_servers, rtc_ice_servers
from proxy.consult.server import startup_warnings
from tests.rtc_client import LocalProxy, NeutralPipeline

KEY = "security-test-key-0123456789"
TURN_SECRET = "turn-secret-for-security-tests"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, **kwargs) as response:
        text = await response.text()
        return response.status, json.loads(text) if text.startswith(("{", "[")) else text


# ---- 4: tokens out of URLs -------------------------------------------------------------------------------


async def test_links_carry_the_token_in_the_fragment_and_reads_take_a_bearer_token(
        session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        for role in ("patient", "doctor"):
            link = urlsplit(room[f"{role}_url"])
            assert link.path == f"/{role}" and link.query == "", room[f"{role}_url"]  # nothing a server sees
            assert parse_qs(link.fragment) == {"room": [room["room"]], "token": [room[f"{role}_token"]]}
        state_url = f"{proxy.base}/api/rooms/{room['room']}"
        for token in (room["patient_token"], room["doctor_token"]):
            status, state = await get(session, state_url, headers=bearer(token))
            assert status == 200 and state["room"] == room["room"]
        # a token in the query string is refused, on any API route, even when it is valid
        for url in (state_url, f"{state_url}/ice", f"{proxy.base}/api/rooms", f"{proxy.base}/api/anything"):
            status, body = await get(session, url, params={"token": room["doctor_token"]}, headers=bearer(KEY))
            assert status == 401 and "URL" in body["error"], (url, body)
        status, body = await get(session, state_url)
        assert status == 401 and "Authorization: Bearer" in body["error"]
        status, _ = await get(session, state_url, headers=bearer("not-a-token-of-this-room"))
        assert status == 403


# ---- 6: ICE/TURN only with a room token, REST credentials, no static password to pages ------------------


async def test_ice_servers_need_a_room_token_and_turn_credentials_are_short_lived(
        session: aiohttp.ClientSession) -> None:
    turn = "turn:turn.example:3478?transport=udp"
    config = Config(api_key=KEY, ice_servers=["stun:stun.example:3478", turn], turn_secret=TURN_SECRET,
                    turn_ttl=300)
    async with LocalProxy(config, NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        ice_url = f"{proxy.base}/api/rooms/{room['room']}/ice"
        status, _ = await get(session, f"{proxy.base}/api/config")
        assert status == 404  # the public configuration is gone
        assert (await get(session, ice_url))[0] == 401
        assert (await get(session, ice_url, headers=bearer("guessed-token-0123456789")))[0] == 403
        assert (await get(session, f"{proxy.base}/api/rooms/nosuchroom/ice",
                          headers=bearer(room["patient_token"])))[0] == 404
        async with session.get(ice_url, headers=bearer(room["patient_token"])) as response:
            assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
            servers = (await response.json())["ice_servers"]
        assert servers[0] == {"urls": ["stun:stun.example:3478"]}
        entry = servers[1]
        expiry, user = entry["username"].split(":", 1)
        assert user == room["room"] and 290 <= int(expiry) - time.time() <= 310
        assert entry["credential"] == base64.b64encode(
            hmac.new(TURN_SECRET.encode(), entry["username"].encode(), hashlib.sha1).digest()).decode()
        assert TURN_SECRET not in json.dumps(servers)


async def test_a_static_turn_password_never_reaches_a_page(session: aiohttp.ClientSession) -> None:
    password = "static-turn-password-0123"
    config = Config(api_key=KEY, ice_servers=["stun:stun.example:3478", "turn:turn.example:3478"],
                    turn_username="clinic", turn_password=password)
    async with LocalProxy(config, NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        async with session.get(f"{proxy.base}/api/rooms/{room['room']}/ice",
                               headers=bearer(room["doctor_token"])) as response:
            text = await response.text()
        assert response.status == 200
        assert json.loads(text) == {"ice_servers": [{"urls": ["stun:stun.example:3478"]}]}  # STUN only
        assert password not in text
    # the proxy's own peers still relay with it, and serve says so at start
    own = rtc_ice_servers(config)
    assert [(s.urls, s.username, s.credential) for s in own if s.credential] == [
        (["turn:turn.example:3478"], "clinic", password)]
    assert ice_servers(config, "room") == [{"urls": ["stun:stun.example:3478"]}]
    warnings = startup_warnings(config, tls=False)
    assert len(warnings) == 1 and "static password" in warnings[0] and "STUN only" in warnings[0]
    assert password not in warnings[0]

"""The HTTP side of security issue 14, one section per finding: 4 tokens out of URLs. Against the real app on
127.0.0.1 (no media: these are HTTP properties)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from proxy.consult.config import Config
from tests.rtc_client import LocalProxy, NeutralPipeline

KEY = "security-test-key-0123456789"


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

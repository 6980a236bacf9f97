"""The HTTP side of security issue 14, one section per finding: 4 tokens out of URLs, 5 a rate limiter that
tells clients apart, 6 ICE/TURN only for a room's token holders, 8 4xx (never 5xx) for odd input, 9 security
headers, 10 operations endpoints that are not public. Against the real app on 127.0.0.1 (no media: these are
HTTP properties)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from proxy.consult.config import Config
from proxy.consult.ice import ice_servers, rtc_ice_servers
from proxy.consult.limits import ClientAddresses
from proxy.consult.server import metrics, readyz, startup_warnings
from proxy.resources import WEB
from tests.rtc_client import LocalProxy, NeutralPipeline

KEY = "security-test-key-0123456789"
METRICS_TOKEN = "metrics-token-0123456789"
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


async def raw_request(base: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client library would send these headers) and read the status and body."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


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
        # the pages send no Referer (a page URL could carry a room)
        async with session.get(f"{proxy.base}/patient") as response:
            assert response.headers["Referrer-Policy"] == "no-referrer"


# ---- 5: the rate limiter tells clients apart -------------------------------------------------------------


def test_client_address_behind_trusted_proxies() -> None:
    none, proxies = ClientAddresses([]), ClientAddresses(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])
    # X-Forwarded-For from an untrusted peer is ignored: the peer is the client
    assert str(none.client("203.0.113.7", ["198.51.100.1"])) == "203.0.113.7"
    # from a trusted proxy: the right-most address no trusted proxy vouches for
    assert str(proxies.client("127.0.0.1", ["198.51.100.1"])) == "198.51.100.1"
    assert str(proxies.client("127.0.0.1", ["1.2.3.4, 198.51.100.1, 10.1.2.3"])) == "198.51.100.1"
    assert str(proxies.client("127.0.0.1", ["1.2.3.4", "198.51.100.1"])) == "198.51.100.1"  # repeated headers
    assert str(proxies.client("127.0.0.1", ["10.0.0.5"])) == "10.0.0.5"  # all trusted: the left-most
    assert str(proxies.client("127.0.0.1", ["198.51.100.1, garbage"])) == "127.0.0.1"  # a hop we cannot read
    assert str(proxies.client("127.0.0.1", ["[2001:db8::5]:443"])) == "2001:db8::5"
    assert str(proxies.client("::ffff:127.0.0.1", ["192.0.2.9:5000"])) == "192.0.2.9"
    # IPv6 clients are counted per /64
    key = ClientAddresses.key
    assert key(proxies.client("::1", [])) != key(proxies.client("2001:db8::1", []))
    assert key(none.client("2001:db8::1")) == key(none.client("2001:db8::ffff:1234")) == "ip:2001:db8::/64"
    assert key(none.client("2001:db8::1")) != key(none.client("2001:db8:0:1::1"))
    with pytest.raises(ValueError, match="trusted_proxies"):
        Config.load(environ={"MASKPROXY_TRUSTED_PROXIES": "10.0.0.0/8, nginx.local"})
    assert Config.load(environ={"MASKPROXY_TRUSTED_PROXIES": "10.0.0.0/8, ::1"}).trusted_proxies == ["10.0.0.0/8",
                                                                                                       "::1"]


async def spend(session: aiohttp.ClientSession, url: str, n: int, headers: dict[str, str] | None = None
                ) -> list[int]:
    statuses = []
    for _ in range(n):
        async with session.get(url, headers=headers or {}) as response:
            statuses.append(response.status)
    return statuses


async def test_rate_limit_per_forwarded_client_and_per_room(session: aiohttp.ClientSession) -> None:
    config = Config(api_key=KEY, rate_limit=0.01, rate_burst=4, trusted_proxies=["127.0.0.1"])
    async with LocalProxy(config, NeutralPipeline) as proxy:
        room = await proxy.create_room(session)  # one request of 127.0.0.1's own budget
        missing = f"{proxy.base}/api/rooms/nosuchroom"

        def via(address: str) -> dict[str, str]:
            return {"X-Forwarded-For": address}

        # behind the trusted proxy, each forwarded client has its own budget
        assert await spend(session, missing, 5, via("198.51.100.1")) == [404] * 4 + [429]
        assert await spend(session, missing, 4, via("198.51.100.2")) == [404] * 4
        # a client cannot buy a new budget by writing its own X-Forwarded-For entries
        assert await spend(session, missing, 2, via("9.9.9.9, 198.51.100.1")) == [429, 429]
        # IPv6: one budget per /64, whatever the interface bits
        assert await spend(session, missing, 5, via("2001:db8::1")) == [404] * 4 + [429]
        assert await spend(session, missing, 1, via("2001:db8::abcd:1")) == [429]
        assert await spend(session, missing, 1, via("2001:db8:0:1::1")) == [404]
        # the proxy's own address is spent too now; a consult's requests with its valid room token still pass
        assert await spend(session, missing, 4) == [404, 404, 404, 429]
        state_url = f"{proxy.base}/api/rooms/{room['room']}"
        assert await spend(session, state_url, 2, bearer(room["patient_token"])) == [200] * 2
        assert await spend(session, f"{state_url}/ice", 1, bearer(room["doctor_token"])) == [200]
        async with session.post(f"{state_url}/offer", json={"token": room["patient_token"], "role": "patient",
                                                            "sdp": "v=0\r\n", "type": "offer"}) as response:
            assert response.status == 400  # answered (a bad SDP), not rate-limited
        # a wrong room token does not get the room's budget
        assert await spend(session, state_url, 1, bearer("x" * 32)) == [429]


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY, rate_limit=0.01, rate_burst=3), NeutralPipeline) as proxy:
        statuses = [(await spend(session, f"{proxy.base}/api/rooms/x", 1, {"X-Forwarded-For": f"192.0.2.{i}"}))[0]
                    for i in range(5)]
        assert statuses == [404, 404, 404, 429, 429]


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


# ---- 8: odd input gets 4xx, never a 5xx with a traceback ------------------------------------------------


async def test_odd_input_gets_4xx(session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        room = await proxy.create_room(session)
        offer_url = f"{proxy.base}/api/rooms/{room['room']}/offer"
        nested = b'{"token": ' + b"[" * 30000 + b"]" * 30000 + b"}"
        bodies = {
            "lone surrogate in the token": b'{"token": "\\ud800", "role": "patient", "sdp": "v=0\\r\\n", '
                                           b'"type": "offer"}',
            "lone surrogate in the SDP": json.dumps({"token": room["patient_token"], "role": "patient",
                                                     "sdp": "v=0\r\n", "type": "offer"}).replace(
                "v=0", "v=0\\udfff").encode(),
            "deeply nested JSON": nested,
            "deeply nested token value": b'{"token": ' + b'{"a":' * 9000 + b"1" + b"}" * 9000 + b"}",
        }
        for name, body in bodies.items():
            async with session.post(offer_url, data=body, headers={"Content-Type": "application/json"}) as response:
                payload = await response.json()
                assert response.status in (400, 401), (name, response.status, payload)
                assert isinstance(payload["error"], str), name
        # bytes that are not UTF-8 in Authorization, on every route that reads it
        host = urlsplit(proxy.base).netloc.encode()
        for method, path in ((b"POST", b"/api/rooms"), (b"DELETE", f"/api/rooms/{room['room']}".encode()),
                             (b"GET", f"/api/rooms/{room['room']}".encode()),
                             (b"GET", f"/api/rooms/{room['room']}/ice".encode())):
            status, body = await raw_request(proxy.base, method + b" " + path + b" HTTP/1.1\r\nHost: " + host
                                             + b"\r\nAuthorization: Bearer \xff\xfe\xc3(\r\nContent-Length: 0\r\n"
                                             b"Connection: close\r\n\r\n")
            assert status == 401, (method, path, status, body[:200])
            assert "error" in json.loads(body)
        # the room still works and nothing above was logged as a server fault
        assert proxy.registry.get(room["room"]) is not None
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


async def test_unforeseen_input_errors_are_4xx_and_real_faults_still_5xx(session: aiohttp.ClientSession,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The catch-all: a Unicode or recursion error from input no check foresaw is a 400 (logged as a warning with
    its traceback); any other exception stays a 500 logged as an error, so real faults are not hidden."""
    proxy = LocalProxy(Config(api_key=KEY), NeutralPipeline)

    async def unicode(request: web.Request) -> web.Response:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    async def bug(request: web.Request) -> web.Response:
        raise KeyError("a bug of ours")

    proxy.app.router.add_get("/api/test-unicode", unicode)
    proxy.app.router.add_get("/api/test-bug", bug)
    async with proxy:
        assert (await get(session, f"{proxy.base}/api/test-unicode")) == (400, {"error": "malformed request"})
        assert (await get(session, f"{proxy.base}/api/test-bug")) == (500, {"error": "internal error"})
    levels = {r.levelname for r in caplog.records if "test-" in r.getMessage()}
    assert levels == {"WARNING", "ERROR"}


# ---- 9: security headers ---------------------------------------------------------------------------------


class _InlineCode(HTMLParser):
    """Finds what a strict CSP would block in a page: inline scripts, <style> elements, style and on* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self._script_without_src = True
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {name}=" for name in names if name == "style" or name.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self._script_without_src and data.strip():
            self.found.append(f"inline script: {data.strip()[:40]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script_without_src = False


def test_pages_have_no_inline_code() -> None:
    for page in sorted(WEB.glob("*.html")):
        parser = _InlineCode()
        parser.feed(page.read_text())
        assert not parser.found, (page.name, parser.found)


async def test_security_headers_on_every_response(session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        requests = [("GET", "/"), ("GET", "/patient"), ("GET", "/doctor"), ("GET", "/static/js/api.js"),
                    ("GET", "/static/style.css"), ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/nope"),
                    ("POST", "/api/rooms"), ("GET", "/api/rooms/nosuchroom"), ("PUT", "/api/rooms")]
        for method, path in requests:
            async with session.request(method, proxy.base + path, headers=bearer(KEY)) as response:
                headers = response.headers
                csp = {part.split()[0]: part.split()[1:] for part in headers["Content-Security-Policy"].split("; ")}
                assert csp["frame-ancestors"] == ["'none'"], path
                assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"], path  # no inline code
                assert csp["media-src"] == ["'self'"] and csp["connect-src"] == ["'self'"], path
                assert csp["default-src"] == ["'none'"], path
                assert headers["X-Content-Type-Options"] == "nosniff", path
                assert headers["Referrer-Policy"] == "no-referrer", path
                policy = headers["Permissions-Policy"]
                assert "camera=(self)" in policy and "microphone=(self)" in policy and "geolocation=()" in policy
                assert "Strict-Transport-Security" not in headers, path  # plain HTTP: HSTS only over TLS
                if path.startswith("/api/"):
                    assert headers["Cache-Control"] == "no-store", path


def test_serve_warns_when_it_serves_plain_http_beyond_loopback() -> None:
    for host in ("0.0.0.0", "192.168.1.20", "::"):
        (warning,) = startup_warnings(Config(host=host), tls=False)
        assert "plain HTTP" in warning and "refuse the camera" in warning and "in clear" in warning
        assert startup_warnings(Config(host=host), tls=True) == []
    for host in ("127.0.0.1", "::1", "localhost"):
        assert startup_warnings(Config(host=host), tls=False) == []


# ---- 10: /metrics and /readyz are not public --------------------------------------------------------------


def _from(app: web.Application, path: str, remote: str, headers: dict[str, str] | None = None) -> web.Request:
    return make_mocked_request("GET", path, headers=headers or {}, app=app).clone(remote=remote)


async def test_metrics_and_readyz_only_for_operators(session: aiohttp.ClientSession) -> None:
    async with LocalProxy(Config(api_key=KEY), NeutralPipeline) as proxy:
        # no metrics_token: this machine only, and not through a reverse proxy on it
        for path in ("/metrics", "/readyz"):
            assert (await get(session, proxy.base + path))[0] == 200, path
            status, body = await get(session, proxy.base + path, headers={"X-Forwarded-For": "203.0.113.4"})
            assert status == 403 and "metrics_token" in body["error"], path
        assert (await get(session, f"{proxy.base}/healthz")) == (200, {"ok": True})
        for handler, path in ((metrics, "/metrics"), (readyz, "/readyz")):
            response = await handler(_from(proxy.app, path, "203.0.113.4"))
            assert response.status == 403, path
    async with LocalProxy(Config(api_key=KEY, metrics_token=METRICS_TOKEN), NeutralPipeline) as proxy:
        for path in ("/metrics", "/readyz"):
            assert (await get(session, proxy.base + path))[0] == 401, path  # loopback is not enough now
            assert (await get(session, proxy.base + path, headers=bearer(KEY)))[0] == 403, path
            status, body = await get(session, proxy.base + path, headers=bearer(METRICS_TOKEN))
            assert status == 200, (path, body)
        assert "maskproxy_consults" in (await get(session, f"{proxy.base}/metrics", headers=bearer(METRICS_TOKEN)))[1]
        response = await readyz(_from(proxy.app, "/readyz", "203.0.113.4", bearer(METRICS_TOKEN)))
        assert response.status == 200
        assert (await get(session, f"{proxy.base}/healthz"))[0] == 200
    with pytest.raises(ValueError, match="metrics_token must be at least 16"):
        Config.load(environ={"MASKPROXY_METRICS_TOKEN": "short"})

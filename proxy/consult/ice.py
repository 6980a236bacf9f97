"""STUN/TURN servers for the proxy's own peers and for the pages, with TURN REST credentials.

With a shared secret (coturn's ``use-auth-secret``/``static-auth-secret``),
each request gets a credential valid for ``turn_ttl`` seconds: the username is
``<expiry>:<room id>``, the password base64(HMAC-SHA1(secret, username)), as
the TURN REST API draft and coturn define. A page gets them only for its own
room (the caller checks the room token). Static TURN credentials are for the
proxy's own peers only: a page then gets the STUN servers and no TURN at all,
since a long-lived password handed to browsers is an open relay for anyone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from aiortc import RTCIceServer

from proxy.consult.config import Config


def turn_rest_credentials(secret: str, ttl: float, user: str = "maskproxy", now: float | None = None
                          ) -> tuple[str, str]:
    """``(<expiry>:<user>, base64(HMAC-SHA1(secret, username)))``, valid for ``ttl`` seconds."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def static_turn_for_pages(config: Config) -> bool:
    """True when TURN servers are configured with a static password only: pages then get STUN only."""
    has_turn = any(u.startswith(("turn:", "turns:")) for u in config.ice_servers)
    return has_turn and not config.turn_secret and config.turn_password is not None


def ice_servers(config: Config, room: str = "maskproxy", *, page: bool = True) -> list[dict[str, Any]]:
    """RTCIceServer dictionaries, as an RTCPeerConnection takes them.

    ``page``: for a browser of consult ``room``: TURN only with REST credentials (username
    ``<expiry>:<room>``), never a static password. Otherwise for the proxy's own peers, which
    may use either kind.
    """
    servers: list[dict[str, Any]] = []
    stun = [u for u in config.ice_servers if u.startswith(("stun:", "stuns:"))]
    turn = [u for u in config.ice_servers if u.startswith(("turn:", "turns:"))]
    if stun:
        servers.append({"urls": stun})
    if not turn:
        return servers
    if config.turn_secret:
        username, credential = turn_rest_credentials(config.turn_secret, config.turn_ttl, room)
    elif page:
        return servers  # a static password never reaches a page
    else:
        username, credential = config.turn_username, config.turn_password
    entry: dict[str, Any] = {"urls": turn}
    if username and credential:
        entry.update(username=username, credential=credential)
    servers.append(entry)
    return servers


def rtc_ice_servers(config: Config, room: str = "maskproxy") -> list[RTCIceServer]:
    """The servers for the proxy's own aiortc peers (static TURN credentials included)."""
    return [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers(config, room, page=False)]

"""STUN/TURN servers for the proxy's own peers and for the pages, with TURN REST credentials.

With a shared secret (coturn's ``use-auth-secret``/``static-auth-secret``),
each request gets a credential valid for ``turn_ttl`` seconds: the username is
the expiry time, the password HMAC-SHA1 of it, as the TURN REST API draft and
coturn define. No long-lived TURN password reaches a browser.
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
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: Config) -> list[dict[str, Any]]:
    """RTCIceServer dictionaries, as the pages' RTCPeerConnection takes them."""
    servers: list[dict[str, Any]] = []
    stun = [u for u in config.ice_servers if u.startswith(("stun:", "stuns:"))]
    turn = [u for u in config.ice_servers if u.startswith(("turn:", "turns:"))]
    if stun:
        servers.append({"urls": stun})
    if turn:
        if config.turn_secret:
            username, credential = turn_rest_credentials(config.turn_secret, config.turn_ttl)
        else:
            username, credential = config.turn_username, config.turn_password
        entry: dict[str, Any] = {"urls": turn}
        if username and credential:
            entry.update(username=username, credential=credential)
        servers.append(entry)
    return servers


def rtc_ice_servers(config: Config) -> list[RTCIceServer]:
    """The same servers for the proxy's own aiortc peers."""
    return [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in ice_servers(config)]

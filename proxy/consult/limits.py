"""Who is asking, and how often: the client address behind trusted reverse proxies, and the API's rate limit.

A request's client is its direct peer, unless that peer is one of the configured
``trusted_proxies``: then ``X-Forwarded-For`` is read from the right, skipping the
trusted hops, and the first address no trusted proxy vouches for is the client
(everything left of it could have been written by the client itself). IPv6
clients are counted per /64, the block one subscriber gets, so that changing
the interface bits does not buy a fresh budget.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 clients share one rate-limit budget per prefix of this length.
IPV6_CLIENT_PREFIX = 64


def parse_address(text: str) -> Address | None:
    """An IP address from a peer name or a forwarded-for entry (``[v6]:port`` and ``v4:port`` too); None if not one."""
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # 192.0.2.1:5000
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """Resolves a request's client address from its peer and ``X-Forwarded-For``, trusting only the given proxies."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(entry, strict=False)
                                                  for entry in trusted_proxies)

    def is_trusted(self, address: Address) -> bool:
        return any(address.version == network.version and address in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> Address | None:
        """The client's address; None when even the direct peer has none (e.g. a Unix socket)."""
        address = parse_address(peer or "")
        if address is None or not self.is_trusted(address):
            return address
        hops = [hop for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            candidate = parse_address(hop)
            if candidate is None:  # a trusted proxy would not write this: stop at the last address vouched for
                break
            address = candidate
            if not self.is_trusted(candidate):
                break
        return address

    @staticmethod
    def key(address: Address | None) -> str:
        """The rate-limit key of an address: itself for IPv4, its /64 for IPv6."""
        if address is None:
            return "ip:?"
        if isinstance(address, ipaddress.IPv6Address):
            return f"ip:{ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)}"
        return f"ip:{address}"


class RateLimiter:
    """Token bucket per key (a client address or a room): ``rate`` requests per second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10000) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.max_clients:  # forget the idlest clients
            for key, _ in sorted(self._buckets.items(), key=lambda item: item[1][1])[: self.max_clients // 10]:
                del self._buckets[key]
        return allowed

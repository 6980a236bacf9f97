"""Which ICE candidates of an offer the proxy will send connectivity checks to.

The proxy sends STUN binding requests to every candidate an offer lists, so a token
holder could otherwise make it probe any host and port, its own loopback services and
the clinic's internal network included. Before an offer is applied its ``a=candidate``
lines are filtered: loopback (unless the proxy itself listens on loopback: development
and tests), link-local, multicast, unspecified and reserved addresses, and host names
other than a browser's mDNS ``.local`` name, are dropped; with ``refuse_private``
(internet-facing deployments) so are private (RFC 1918), unique-local (fc00::/7) and
carrier-grade NAT (100.64.0.0/10) addresses and mDNS names; and at most ``MAX_CANDIDATES``
are kept. Pure functions: no I/O, no state.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

#: Most candidates kept from one offer: a browser lists a handful per network interface and server.
MAX_CANDIDATES = 32
#: Private ranges refused with ``refuse_private``: RFC 1918, carrier-grade NAT (RFC 6598), unique local (RFC 4193).
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
LOOPBACK_HOSTS = ("localhost",)


def listens_on_loopback(host: str) -> bool:
    """Whether the proxy's own address ``host`` is a loopback one (development, tests)."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(address: str, allow_loopback: bool, refuse_private: bool) -> str | None:
    """Why a candidate at ``address`` is dropped (``loopback``, ``private``, ...), or None to keep it."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if address.lower().endswith(".local") and "." not in address[:-6]:
            return "private" if refuse_private else None  # a browser's mDNS name: only ever on the local network
        return "host name"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:  # 240.0.0.0/4, broadcast
        return "reserved"
    if refuse_private and any(ip in network for network in PRIVATE_NETWORKS):
        return "private"
    return None


def filter_offer(sdp: str, allow_loopback: bool, refuse_private: bool = False,
                 limit: int = MAX_CANDIDATES) -> tuple[str, Counter[str]]:
    """``sdp`` without the candidates the proxy must not try, and how many were dropped for each reason."""
    dropped: Counter[str] = Counter()
    kept = 0
    out = []
    for line in sdp.splitlines():  # as aiortc reads it: any line break
        if line.startswith("a=candidate:"):
            fields = line[len("a=candidate:"):].split()
            if len(fields) < 8 or fields[6] != "typ" or not fields[5].isdigit() or not 0 < int(fields[5]) < 65536:
                dropped["malformed"] += 1
                continue
            reason = refusal(fields[4], allow_loopback, refuse_private)
            if reason is None and kept >= limit:
                reason = "over the cap"
            if reason is not None:
                dropped[reason] += 1
                continue
            kept += 1
        out.append(line)
    return "\r\n".join(out) + "\r\n", dropped

"""Who the client is: the peer address, or the one trusted proxies forwarded (pure).

What rate limits and exemptions key on, so a client cannot choose it: X-Forwarded-For is read
only from trusted proxies, and an address taken from it is never exempt.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _parse_ip(text: str) -> IpAddress | None:
    """An address from a peer or X-Forwarded-For entry; tolerates `[v6]:port` and `v4:port`."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # `::ffff:1.2.3.4` from a dual-stack socket is 1.2.3.4
    return address


def _trusted(address: IpAddress, networks: tuple[IpNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


class ClientAddress(NamedTuple):
    ip: str
    forwarded: bool
    """Taken from X-Forwarded-For: never exempt from limits, whatever it says (it names
    what a proxy was told, and a client can make a trusted hop append a loopback address)."""


def client_address(
    peer: str, forwarded_for: str | None, trusted_proxies: list[str]
) -> ClientAddress:
    """The address to rate-limit: the peer, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right (each proxy appends the
    address it saw) and the walk stops at the first hop that is not a trusted proxy: that is
    the client; anything to its left was written by the client and may be forged. An
    unreadable entry stops the walk at the trusted hop that reported it.
    """
    peer_address = _parse_ip(peer)
    if peer_address is None:
        return ClientAddress(peer, False)  # not an IP (e.g. a unix socket): nothing better
    networks = _networks(tuple(trusted_proxies))
    if not forwarded_for or not _trusted(peer_address, networks):
        return ClientAddress(str(peer_address), False)
    nearest = peer_address
    for entry in reversed(forwarded_for.split(",")):
        address = _parse_ip(entry)
        if address is None:
            break
        if not _trusted(address, networks):
            return ClientAddress(str(address), True)
        nearest = address
    return ClientAddress(str(nearest), True)


def client_ip(peer: str, forwarded_for: str | None, trusted_proxies: list[str]) -> str:
    return client_address(peer, forwarded_for, trusted_proxies).ip


def subject_of_ip(ip: str, ipv6_prefix: int = 64) -> str:
    """Rate-limit subject for an address: IPv6 clients are grouped by their /64 (one site)."""
    address = _parse_ip(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))
    return ip if address is None else str(address)

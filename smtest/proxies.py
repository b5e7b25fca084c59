"""The address a request really came from, for the admin's login lockout (django-axes'
AXES_CLIENT_IP_CALLABLE); docs/security.md, "The admin".

REMOTE_ADDR is the peer of the connection: behind a reverse proxy, the proxy, for every client.
A proxy listed in TRUSTED_PROXIES appends the address of its own peer to X-Forwarded-For, so the
client is the right-most address of that header that is not itself a trusted proxy. Whatever
stands further left was written by the sender of the request and proves nothing; from a peer
that is not a trusted proxy the header is ignored altogether, since any client can send it.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or, when that is a trusted proxy, the address its X-Forwarded-For names."""
    remote = request.META.get("REMOTE_ADDR") or None
    client = parse_address(remote or "")
    if client is None:  # a Unix socket's peer, or a test client's made-up value
        return remote
    proxies = trusted_networks(tuple(getattr(settings, "TRUSTED_PROXIES", None) or ()))
    if not _within(client, proxies):
        return str(client)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed(forwarded.split(",") if forwarded else []):
        address = parse_address(hop)
        if address is None:  # not written by a proxy: nothing left of it can be believed
            break
        client = address
        if not _within(address, proxies):
            break
    return str(client)


def parse_address(value: str) -> IPAddress | None:
    """An address as proxies write it (`203.0.113.7`, `203.0.113.7:51234`, `2001:db8::7`,
    `[2001:db8::7]:51234`), an IPv4-mapped IPv6 address as its IPv4 one; None for anything else."""
    text = value.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return getattr(address, "ipv4_mapped", None) or address


@functools.lru_cache(maxsize=16)
def trusted_networks(values: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def _within(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)

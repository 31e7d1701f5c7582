"""Refuse URLs that point inside the machine or its network, before any request is made.

Limits of a resolve-then-fetch check (documented in README): the name is resolved here and
again by the downloader, so a DNS answer that changes in between (rebinding) or a redirect
to a private address is not caught. Run download nodes in a network that cannot reach
private services if that matters; this guard stops the common and accidental cases.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from urllib.parse import urlsplit


def _bad_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for flag in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_reserved", "is_unspecified"):
        if getattr(ip, flag):
            return flag[3:].replace("_", "-")
    if not ip.is_global:  # e.g. 100.64.0.0/10 shared address space (cloud metadata services)
        return "non-global"
    return None


@functools.lru_cache(maxsize=65536)
def _resolve(host: str) -> tuple[str, ...]:
    try:
        return tuple(sorted({info[4][0] for info in socket.getaddrinfo(host, None)}))
    except (socket.gaierror, UnicodeError, OSError):
        return ()  # unresolvable: let the downloader report the DNS failure


def check_url(url: str | None, allow_private: bool = False) -> str | None:
    """None when the URL may be fetched, else a readable reason for `refused_address`.

    The scheme is always checked; `allow_private` skips only the address check."""
    if not url:
        return "URL is empty"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as exc:
        return f"URL does not parse ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return f"scheme {parts.scheme or '(none)'!r} is not http or https"
    if not host:
        return "URL has no host"
    if allow_private:
        return None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    for addr in [str(literal)] if literal else _resolve(host):
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
        why = _bad_ip(ip)
        if why:
            named = "" if literal else f"{host} resolves to "
            return f"{named}{ip} is a {why} address; pass --allow-private-addresses to fetch it"
    return None

"""Address guard: check_url only, and no network traffic at all.

An autouse fixture replaces name resolution (only `localhost` and numeric hosts resolve, both
without DNS) and makes every socket connect fail, so nothing here can reach 10.x, 169.254.x or
anything else even if the guard were wrong. The stage-level test (loopback URLs of the fault
server refused with no request made) is in tests/stages/test_download.py.
"""

from __future__ import annotations

import socket

import pytest

from laionface import addressguard
from laionface.addressguard import check_url

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    resolved = []

    def getaddrinfo(host, *args, **kwargs):
        resolved.append(host)
        if host == "localhost":  # /etc/hosts, as the real resolver does
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))]
        # numeric forms (127.1, 2130706433) are parsed locally; names never reach DNS
        return _real_getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)

    def connect(self, *args, **kwargs):
        raise AssertionError(f"network traffic attempted: connect{args}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    addressguard._resolve.cache_clear()
    yield resolved
    addressguard._resolve.cache_clear()


@pytest.mark.parametrize(
    "url, words",
    [
        ("file:///etc/passwd", ["scheme", "file"]),
        ("ftp://ftp.example.org/x.jpg", ["scheme", "ftp"]),
        ("gopher://127.0.0.1:70/_x", ["scheme"]),
        ("example.com/x.jpg", ["scheme"]),
        ("http://10.0.0.1/x.jpg", ["10.0.0.1", "private"]),
        ("http://192.168.1.20/x.jpg", ["private"]),
        ("http://172.16.0.1/x.jpg", ["private"]),
        ("http://169.254.169.254/latest", ["169.254.169.254", "allow-private-addresses"]),
        ("http://[::1]/x", ["::1", "loopback"]),
        ("http://[fe80::1]/x", ["fe80::1"]),  # link-local (named "private": that flag is checked first)
        ("http://[fc00::1]/x", ["private"]),
        ("http://[::ffff:127.0.0.1]/x", ["::ffff:7f00:1"]),  # IPv4-mapped IPv6 loopback
        ("http://localhost/x", ["localhost resolves to 127.0.0.1", "loopback"]),
        ("http://localhost:8080/x.jpg", ["localhost resolves to 127.0.0.1"]),
        ("http://127.0.0.1:8000/x.jpg", ["loopback"]),
        ("http://127.1/x.jpg", ["127.0.0.1"]),  # shorthand that urllib/libc accept
        ("http://2130706433/x.jpg", ["127.0.0.1"]),  # 127.0.0.1 as one decimal number
        ("http://0.0.0.0/", ["0.0.0.0"]),
        ("http://224.0.0.1/", ["multicast"]),
        ("http://240.0.0.1/", ["240.0.0.1"]),  # reserved
        ("HTTP://10.1.2.3/x.jpg", ["private"]),
        ("http://user:pw@10.0.0.1/x.jpg", ["10.0.0.1"]),
        ("http:///x.jpg", ["no host"]),
        ("", ["empty"]),
        (None, ["empty"]),
        ("http://[::1/x", ["parse"]),
    ],
)
def test_refused(url, words):
    why = check_url(url)
    assert why, f"{url!r} was allowed"
    for word in words:
        assert word in why, (url, why)


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/x.jpg",
        "https://93.184.216.34:8443/a/b.png?x=1",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/x.jpg",
        "http://8.8.8.8/x.jpg",
    ],
)
def test_public_literals_allowed_without_resolution(url, no_network):
    assert check_url(url) is None
    assert no_network == []  # a literal address is never looked up


def test_unresolvable_name_is_left_to_the_downloader(no_network):
    # The fake resolver fails every name but localhost: the guard does not refuse it (the
    # download reports the DNS failure) and it asked the resolver once.
    assert check_url("http://no-such-host.invalid/x.jpg") is None
    assert no_network == ["no-such-host.invalid"]


def test_resolution_is_cached(no_network):
    for _ in range(3):
        assert check_url("http://localhost/a.jpg")
    assert no_network == ["localhost"]


def test_shared_address_space_is_refused():
    # 100.64.0.0/10 (RFC 6598, carrier-grade NAT) is neither public nor routable on the internet,
    # and 100.100.100.200 is Alibaba Cloud's instance-metadata address (like 169.254.169.254).
    # Python's ipaddress says is_private=False but is_global=False for it.
    assert check_url("http://100.100.100.200/latest/meta-data/")
    assert check_url("http://100.64.0.1/x.jpg")

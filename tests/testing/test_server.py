"""Each FaultServer endpoint, checked with urllib and raw sockets over real HTTP."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import pytest

from laionface.testing.server import FaultServer

_unique = count()


def fetch(url: str, method: str = "GET", timeout: float = 5.0, opener=None):
    """(status, headers, body) for any status; urllib raises on >= 400, we want them as data."""
    request = urllib.request.Request(url, method=method)
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # hand the 3xx back as an HTTPError so we can look at it


def fresh(path: str) -> str:
    """A query string makes a path the server has not counted yet (the server is shared)."""
    return f"{path}?k={next(_unique)}"


def test_serves_files_with_type_and_length(fault_server):
    expected = (fault_server.root / "face_0.jpg").read_bytes()
    status, headers, body = fetch(fault_server.url_for("face_0.jpg"))
    assert (status, body) == (200, expected)
    assert headers["Content-Type"] == "image/jpeg"
    assert int(headers["Content-Length"]) == len(expected)
    assert fetch(fault_server.url_for("rgba.png"))[1]["Content-Type"] == "image/png"


def test_head_sends_headers_without_body(fault_server):
    size = (fault_server.root / "face_1.jpg").stat().st_size
    status, headers, body = fetch(fault_server.url_for("face_1.jpg"), method="HEAD")
    assert (status, body) == (200, b"")
    assert int(headers["Content-Length"]) == size


def test_missing_file_and_escape_attempts_are_404(fault_server):
    assert fetch(fault_server.url_for("nope.jpg"))[0] == 404
    # %2e%2e survives client-side normalisation and becomes ".." on the server.
    conn = http.client.HTTPConnection("127.0.0.1", fault_server.port, timeout=5)
    conn.request("GET", "/%2e%2e/%2e%2e/etc/passwd")
    assert conn.getresponse().status == 404
    conn.close()


@pytest.mark.parametrize("code", [404, 500, 429])
def test_status_faults(fault_server, code):
    status, headers, _ = fetch(f"{fault_server.url}/fault/{code}")
    assert status == code
    if code == 429:
        assert headers["Retry-After"] == "1"


def test_delay_waits_then_serves(fault_server):
    start = time.monotonic()
    status, _, body = fetch(f"{fault_server.url}/fault/delay/0.3/face_0.jpg")
    assert time.monotonic() - start >= 0.3
    assert (status, body) == (200, (fault_server.root / "face_0.jpg").read_bytes())


def test_delay_outlasts_a_short_client_timeout(fault_server):
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        fetch(f"{fault_server.url}/fault/timeout/face_0.jpg", timeout=0.2)


def test_stop_is_fast_while_a_request_sleeps(tmp_path):
    server = FaultServer(tmp_path, timeout_delay=30).start()
    errors = []
    client = threading.Thread(target=lambda: _swallow(errors, f"{server.url}/fault/delay/20/x"))
    client.start()
    time.sleep(0.2)  # let the request reach the sleep
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    client.join(timeout=5)
    assert not client.is_alive() and errors  # the sleeper hung up instead of answering


def _swallow(errors, url):
    try:
        fetch(url, timeout=10)
    except Exception as err:  # noqa: BLE001 - any failure is the expected outcome
        errors.append(err)


def test_reset_sends_rst_not_fin(fault_server):
    with socket.create_connection(("127.0.0.1", fault_server.port), timeout=5) as sock:
        sock.sendall(b"GET /fault/reset HTTP/1.0\r\nHost: x\r\n\r\n")
        # A FIN would read as b"" (clean end); an RST raises ECONNRESET.
        with pytest.raises(ConnectionResetError):
            while sock.recv(4096):
                pass


def test_reset_surfaces_in_urllib(fault_server):
    with pytest.raises((ConnectionResetError, urllib.error.URLError)):
        fetch(f"{fault_server.url}/fault/reset")


def test_redirect_is_followed_to_the_file(fault_server):
    with urllib.request.urlopen(f"{fault_server.url}/fault/redirect/face_2.jpg", timeout=5) as response:
        assert response.url == fault_server.url_for("face_2.jpg")
        assert response.read() == (fault_server.root / "face_2.jpg").read_bytes()


def test_redirect_loop_points_at_itself(fault_server):
    url = f"{fault_server.url}/fault/redirect-loop/3"
    status, headers, _ = fetch(url, opener=urllib.request.build_opener(_NoRedirect))
    assert (status, headers["Location"]) == (302, url)
    with pytest.raises(urllib.error.HTTPError, match="redirect"):
        urllib.request.urlopen(url, timeout=5)  # urllib gives up on the loop


def test_noai_header(fault_server):
    status, headers, body = fetch(f"{fault_server.url}/fault/noai/face_0.jpg")
    assert status == 200 and headers["X-Robots-Tag"] == "noai" and body[:2] == b"\xff\xd8"


def test_html_page(fault_server):
    status, headers, body = fetch(f"{fault_server.url}/fault/html")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"<html>" in body


def test_wrong_type_sends_image_bytes_as_text(fault_server):
    status, headers, body = fetch(f"{fault_server.url}/fault/wrong-type/face_0.jpg")
    assert (status, headers["Content-Type"]) == (200, "text/plain")
    assert body == (fault_server.root / "face_0.jpg").read_bytes()


def test_truncated_promises_more_than_it_sends(fault_server):
    size = (fault_server.root / "face_0.jpg").stat().st_size
    with urllib.request.urlopen(f"{fault_server.url}/fault/truncated/face_0.jpg", timeout=5) as response:
        assert int(response.headers["Content-Length"]) == size
        with pytest.raises(http.client.IncompleteRead) as err:
            response.read()
    assert len(err.value.partial) == size // 2


def test_empty_image(fault_server):
    status, headers, body = fetch(f"{fault_server.url}/fault/empty")
    assert (status, body, headers["Content-Type"], headers["Content-Length"]) == (200, b"", "image/jpeg", "0")


def test_flaky_fails_n_times_then_serves(fault_server):
    url = f"{fault_server.url}{fresh('/fault/flaky/2/face_0.jpg')}"
    assert [fetch(url)[0] for _ in range(4)] == [503, 503, 200, 200]


def test_flaky_counter_is_thread_safe(fault_server):
    url = f"{fault_server.url}{fresh('/fault/flaky/5/face_0.jpg')}"
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: fetch(url)[0], range(12)))
    assert sorted(statuses) == [200] * 7 + [503] * 5


def test_hits_count_each_request(fault_server):
    path = fresh("/face_3.jpg")
    for _ in range(3):
        fetch(f"{fault_server.url}{path}")
    assert fault_server.hits[path] == 3


def test_url_for_quotes_names(tmp_path):
    (tmp_path / "a b.png").write_bytes(b"png?")
    with FaultServer(tmp_path) as server:
        assert server.url_for("a b.png").endswith("/a%20b.png")
        assert fetch(server.url_for("a b.png"))[2] == b"png?"

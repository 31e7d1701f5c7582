"""A real threaded HTTP server on 127.0.0.1 that serves a folder and misbehaves on request.

Downloads fail in the wild in a handful of ways (404, 5xx, throttling, resets, cut-off
bodies, redirect loops, wrong types, opt-out headers); each has an endpoint here so the
download stage is tested against real sockets, never mocks. Python's http.server is slow
(DESIGN.md: benchmarks use nginx) but plenty for tests and the demo.

Endpoints (all answer GET and HEAD):
    /<name>                          the file under root, typed by extension
    /fault/404, /fault/500           that status
    /fault/429                       429 with Retry-After
    /fault/delay/<seconds>/<name>    sleeps (capped at timeout_delay), then the file
    /fault/timeout/<name>            sleeps timeout_delay, then the file
    /fault/reset                     TCP RST instead of a response
    /fault/redirect/<name>           302 to the file
    /fault/redirect-loop/<n>         302 to itself, forever
    /fault/noai/<name>               the file with X-Robots-Tag: noai
    /fault/html                      a 200 text/html page
    /fault/wrong-type/<name>         the file's bytes as text/plain
    /fault/truncated/<name>          full Content-Length, half the body, then close
    /fault/empty                     200, 0 bytes, image/jpeg
    /fault/flaky/<n>/<name>          503 for the first n requests of that path, then the file
"""

from __future__ import annotations

import collections
import mimetypes
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

HTML_PAGE = b"<!doctype html><html><head><title>not an image</title></head><body>hi</body></html>"


class FaultServer:
    """Serve `root` on 127.0.0.1:<free port> until stop(); a context manager.

    `hits` counts requests per request path (query string included, so a test can get a
    fresh flaky counter by adding `?k=...`). `timeout_delay` caps every sleep and is the
    sleep of /fault/timeout, so a test never waits longer than it chose.
    """

    def __init__(self, root: Path, timeout_delay: float = 30.0):
        self.root = Path(root).resolve()
        self.timeout_delay = float(timeout_delay)
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> "FaultServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)  # port 0: the OS picks a free one
        # A short poll interval: shutdown() waits for the loop's next poll (0.5 s by default).
        serve = lambda: self._httpd.serve_forever(poll_interval=0.05)  # noqa: E731
        self._thread = threading.Thread(target=serve, name="FaultServer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()  # wakes sleeping /fault/delay handlers so shutdown is quick
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd, self._thread = None, None

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FaultServer is not started; call start() or use it as a context manager")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, name: str) -> str:
        """URL of the file `name` (relative to root)."""
        return f"{self.url}/{quote(name)}"

    def reset(self) -> None:
        """Forget hits and flaky counters (the server is often shared by a whole session)."""
        with self._lock:
            self.hits.clear()

    # -- used by the handler ---------------------------------------------------------------
    def _count(self, path: str) -> int:
        """Record one request for `path`; return how many there have been, this one included."""
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]

    def _file(self, name: str) -> Path | None:
        """The served file for `name`, or None when missing or outside root."""
        path = (self.root / unquote(name)).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds` (capped); False when the server stopped meanwhile."""
        return not self._stopping.wait(min(seconds, self.timeout_delay))


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client must not keep the process alive
    # The default backlog of 5 makes a burst of parallel downloads wait ~1 s for SYN retries.
    request_queue_size = 128

    def __init__(self, address, handler, owner: FaultServer):
        super().__init__(address, handler)
        self.owner = owner

    def handle_error(self, request, client_address):
        # Clients hang up mid-response on purpose in these tests (timeouts, resets);
        # the default prints a traceback for each, which drowns real failures.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "laionface-fault/1"

    def log_message(self, format, *args):  # quiet: tests read `hits`, not logs
        pass

    def do_HEAD(self):
        self._dispatch()

    def do_GET(self):
        self._dispatch()

    # -- routing ---------------------------------------------------------------------------
    def _dispatch(self):
        owner = self.server.owner
        count = owner._count(self.path)
        parts = urlsplit(self.path).path.lstrip("/").split("/")
        if parts[0] != "fault":
            return self._serve_file("/".join(parts))
        kind, args = (parts[1] if len(parts) > 1 else ""), parts[2:]
        route = _ROUTES.get(kind)
        if route is None:
            return self._send(404, b"no such fault", "text/plain")
        try:
            route(self, args, count)
        except (ValueError, IndexError):  # e.g. /fault/delay/abc/x
            self._send(400, b"bad fault arguments", "text/plain")

    # -- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str | None, headers: dict | None = None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve_file(self, name: str, content_type: str | None = None, headers: dict | None = None):
        path = self.server.owner._file(name)
        if path is None:
            return self._send(404, b"not found", "text/plain")
        guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), content_type or guessed, headers)

    # -- faults ----------------------------------------------------------------------------
    def _delay(self, args, count):
        seconds = float(args[0])
        if self.server.owner._sleep(seconds):
            self._serve_file("/".join(args[1:]))
        else:
            self.close_connection = True  # stopping: hang up without a response

    def _timeout(self, args, count):
        self._delay([str(self.server.owner.timeout_delay), *args], count)

    def _reset(self, args, count):
        # SO_LINGER on with 0 s makes close() send RST instead of FIN: "connection reset by peer".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _redirect(self, args, count):
        self._send(302, b"", "text/plain", {"Location": f"{self.server.owner.url}/{'/'.join(args)}"})

    def _redirect_loop(self, args, count):
        self._send(302, b"", "text/plain", {"Location": f"{self.server.owner.url}{self.path}"})

    def _noai(self, args, count):
        self._serve_file("/".join(args), headers={"X-Robots-Tag": "noai"})

    def _html(self, args, count):
        self._send(200, HTML_PAGE, "text/html; charset=utf-8")

    def _wrong_type(self, args, count):
        self._serve_file("/".join(args), content_type="text/plain")

    def _truncated(self, args, count):
        path = self.server.owner._file("/".join(args))
        if path is None:
            return self._send(404, b"not found", "text/plain")
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))  # promises the whole file...
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body[: len(body) // 2])  # ...and delivers half
        self.close_connection = True

    def _empty(self, args, count):
        self._send(200, b"", "image/jpeg")

    def _flaky(self, args, count):
        failures = int(args[0])
        if count <= failures:
            return self._send(503, b"try again", "text/plain", {"Retry-After": "0"})
        self._serve_file("/".join(args[1:]))


_ROUTES = {
    "404": lambda h, a, c: h._send(404, b"fault 404", "text/plain"),
    "500": lambda h, a, c: h._send(500, b"fault 500", "text/plain"),
    "429": lambda h, a, c: h._send(429, b"fault 429", "text/plain", {"Retry-After": "1"}),
    "delay": _Handler._delay,
    "timeout": _Handler._timeout,
    "reset": _Handler._reset,
    "redirect": _Handler._redirect,
    "redirect-loop": _Handler._redirect_loop,
    "noai": _Handler._noai,
    "html": _Handler._html,
    "wrong-type": _Handler._wrong_type,
    "truncated": _Handler._truncated,
    "empty": _Handler._empty,
    "flaky": _Handler._flaky,
}

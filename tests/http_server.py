"""A local HTTP server on 127.0.0.1 for download tests: serves files from a
dict, honours Range requests, and can cut responses short to simulate
interrupted downloads; a path's mode can drop the Content-Length (the length
is then known to nobody) or send the body chunked; a path can carry extra
response headers, and HEAD requests get the headers alone (what a model hub's
client asks first)."""

from __future__ import annotations

import contextlib
import http.server
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked responses need it; every response closes

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        server = self.server
        server.requests.append(("HEAD " + self.path, None))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        for key, value in server.headers.get(self.path, {}).items():
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        remaining = body[start:]
        mode = server.modes.get(self.path, "length")
        for key, value in server.headers.get(self.path, {}).items():
            self.send_header(key, value)
        if mode == "length":
            self.send_header("Content-Length", str(len(remaining)))
        elif mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        cuts = server.cut_after.get(self.path)
        cut = cuts.pop(0) if cuts else None
        data = remaining if cut is None else remaining[:cut]
        if mode == "chunked":
            for i in range(0, len(data), 4096):
                piece = data[i : i + 4096]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            if cut is None:
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(data)
        self.wfile.flush()
        if cut is not None:
            self.connection.shutdown(2)


@contextlib.contextmanager
def serve(
    files: dict[str, bytes],
    cut_after: dict[str, int | list[int]] | None = None,
    modes: dict[str, str] | None = None,
    headers: dict[str, dict[str, str]] | None = None,
):
    """Yields the base URL ``http://127.0.0.1:<port>`` and the server; stops it on exit.

    ``cut_after[path]``: bytes sent before the connection is cut, for the
    next request (an int) or the next few (a list). ``modes[path]``:
    ``"length"`` (default), ``"no_length"`` or ``"chunked"``. ``headers[path]``:
    extra response headers."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files = files
    server.cut_after = {
        path: list(cut) if isinstance(cut, list) else [cut]
        for path, cut in (cut_after or {}).items()
    }
    server.modes = dict(modes or {})
    server.headers = dict(headers or {})
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()

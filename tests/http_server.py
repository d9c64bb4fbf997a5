"""A local HTTP server on 127.0.0.1 for download tests: serves files from a
dict, honours Range requests, and can cut a response short to simulate an
interrupted download."""

from __future__ import annotations

import contextlib
import http.server
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

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
        self.send_header("Content-Length", str(len(remaining)))
        self.end_headers()
        cut = server.cut_after.pop(self.path, None)
        if cut is not None:
            self.wfile.write(remaining[:cut])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(remaining)


@contextlib.contextmanager
def serve(files: dict[str, bytes], cut_after: dict[str, int] | None = None):
    """Yields the base URL ``http://127.0.0.1:<port>``; stops the server on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files = files
    server.cut_after = dict(cut_after or {})
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()

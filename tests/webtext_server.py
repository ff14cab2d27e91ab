"""A loopback HTTP server for the WebText fetch tests: real pages, served well and badly on purpose.

Paths (on 127.0.0.1, any host name when used as a proxy):

    /page/N             real page N of ../shared/datasets/web_pages, text/html; charset=utf-8 when it is UTF-8
    /slow/N             page N in 8 pieces, `slow` seconds apart
    /retry-after/N      429 with Retry-After: 1 on the first request, then page N
    /flaky/N            503 on the first request, then page N
    /error/N            500 always
    /redirect/K/N       K redirects, then page N
    /loop/N             a redirect to itself
    /to-wikipedia       a redirect to en.wikipedia.org
    /private/N          page N, but robots.txt disallows /private/
    /big                a body larger than any test's --max-bytes, sent without Content-Length
    /image              image/png
    /latin1-no-charset  a Latin-1 page, no charset anywhere
    /latin1-wrong       a Latin-1 page whose header says UTF-8
    /cut/N              page N cut off mid-body (the connection closed early)
    /robots.txt         disallows /private/

As a proxy (absolute URLs in the request line), any other URL is mapped to a real page by `proxy_pages`.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LATIN1 = "<html><head><title>Caf\xe9</title></head><body><article><p>" + "Le caf\xe9 de la gare est ouvert tous les jours, \xe0 la fran\xe7aise. " * 20 + "</p></article></body></html>"


def load_pages(root: Path) -> list[tuple[str, bytes]]:
    """(url, html bytes) of the 300 real pages, in the order of evaldata.json."""
    meta = json.loads((root / "evaldata.json").read_text(encoding="utf-8"))
    return [(url, gzip.decompress((root / "pages" / e["file"]).read_bytes())) for url, e in meta.items()]


class Server:
    def __init__(self, pages: list[bytes], slow: float = 0.2, proxy_pages: dict[str, int] | None = None):
        self.pages, self.slow = pages, slow
        self.proxy_pages = {unquote(url): n for url, n in (proxy_pages or {}).items()}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with server.lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                    count = server.hits[self.path]
                try:
                    server.handle(self, count)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        class HTTPServer(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 drops connections when a client opens 64 at once

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------

    def send(self, h, status: int, body: bytes = b"", ctype: str | None = "text/html; charset=utf-8", headers=(), length=True):
        h.send_response(status)
        if ctype:
            h.send_header("Content-Type", ctype)
        for k, v in headers:
            h.send_header(k, v)
        if length:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)

    def page(self, h, n: int) -> None:
        body = self.pages[n % len(self.pages)]
        try:
            body.decode("utf-8")
            ctype = "text/html; charset=utf-8"
        except UnicodeDecodeError:
            ctype = "text/html"
        self.send(h, 200, body, ctype)

    def handle(self, h, count: int) -> None:
        parts = urlsplit(h.path)
        if parts.scheme:  # used as a proxy: an absolute URL
            if parts.path == "/robots.txt":
                return self.send(h, 404, b"", "text/plain")
            n = self.proxy_pages.get(unquote(h.path))
            return self.page(h, n) if n is not None else self.send(h, 404, b"not here", "text/plain")
        words = parts.path.strip("/").split("/")
        kind, arg = words[0], words[-1]
        if kind == "robots.txt":
            return self.send(h, 200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
        if kind in ("page", "private"):
            return self.page(h, int(arg))
        if kind == "slow":
            body = self.pages[int(arg) % len(self.pages)]
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            step = len(body) // 8 + 1
            for i in range(0, len(body), step):
                h.wfile.write(body[i : i + step])
                h.wfile.flush()
                time.sleep(self.slow)
            return
        if kind == "retry-after":
            return self.send(h, 429, b"slow down", "text/plain", [("Retry-After", "1")]) if count == 1 else self.page(h, int(arg))
        if kind == "flaky":
            return self.send(h, 503, b"busy", "text/plain") if count == 1 else self.page(h, int(arg))
        if kind == "error":
            return self.send(h, 500, b"broken", "text/plain")
        if kind == "redirect":
            k = int(words[1])
            target = f"/redirect/{k - 1}/{arg}" if k > 1 else f"/page/{arg}"
            return self.send(h, 302, b"", None, [("Location", target)])
        if kind == "loop":
            return self.send(h, 301, b"", None, [("Location", parts.path)])
        if kind == "to-wikipedia":
            return self.send(h, 302, b"", None, [("Location", "https://en.wikipedia.org/wiki/Reddit")])
        if kind == "big":
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Connection", "close")
            h.end_headers()
            for _ in range(64):
                h.wfile.write(b"<p>" + b"x" * 65536 + b"</p>")
            return
        if kind == "image":
            return self.send(h, 200, b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "image/png")
        if kind == "latin1-no-charset":
            return self.send(h, 200, LATIN1.encode("latin-1"), None)
        if kind == "latin1-wrong":
            return self.send(h, 200, LATIN1.encode("latin-1"), "text/html; charset=utf-8")
        if kind == "cut":
            body = self.pages[int(arg) % len(self.pages)]
            h.send_response(200)
            h.send_header("Content-Type", "text/html")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        return self.send(h, 404, b"no such page", "text/plain")

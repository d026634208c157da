"""A local HTTP server standing in for fal's CDN (tests, benchmarks and the offline demo).

It behaves as the CDN does where that matters to a backup: Content-Length, Range (206
with Content-Range), 404 once a file has expired, and on request a truncated body, a slow
body, a redirect or an error status. File contents are generated on the fly from a seed,
so a 1 GiB file costs no memory and no disk.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Not a power of two, so file contents never repeat on chunk boundaries.
_PATTERN_SIZE = 1_000_003
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class FakeFile:
    size: int
    seed: int
    content_type: str = "application/octet-stream"
    status: int | None = None  # e.g. 404 (expired), 500, 429
    retry_after: int | None = None  # a Retry-After header on an error status
    redirect_to: str | None = None
    truncate_at: int | None = None  # close the connection after this many body bytes ...
    truncate_times: int = 1_000_000  # ... on this many responses, then serve whole
    slow_delay: float = 0.0  # seconds to sleep between body chunks
    send_length: bool = True
    ranges: bool = True
    # A restricted file (fal's ACLs): without `Authorization: Bearer <bearer>` it answers
    # `denied_status` (403 for "forbid", 404 for "hide").
    bearer: str | None = None
    denied_status: int = 404
    requests: list[str] = field(default_factory=list)  # the Range header of each GET
    authorizations: list[str] = field(default_factory=list)  # the Authorization header of each GET

    def pattern(self) -> bytes:
        return random.Random(self.seed).randbytes(_PATTERN_SIZE)

    def iter_bytes(self, start: int = 0, end: int | None = None, block: int = 256 * 1024) -> Iterator[bytes]:
        pattern = self.pattern()
        end = self.size if end is None else end
        position = start
        while position < end:
            offset = position % _PATTERN_SIZE
            n = min(block, end - position, _PATTERN_SIZE - offset)
            yield pattern[offset : offset + n]
            position += n

    def md5(self) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        for chunk in self.iter_bytes(block=4 * 1024 * 1024):
            digest.update(chunk)
        return digest.hexdigest()


class FakeCdn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.files: dict[str, FakeFile] = {}
        # fal's CDN token endpoint (POST /storage/auth/token), when `token_key` is set: the
        # fal key it accepts, the token it hands out, and how many it handed out.
        self.token_key: str | None = None
        self.token = "cdn-token"
        self.tokens_issued = 0
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"cdn": self})
        self.server = _Server((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeCdn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeCdn:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add(self, path: str, size: int, *, seed: int | None = None, **options: Any) -> str:
        """Serve a file at `path` (e.g. /files/b/abc/out.mp4) and return its URL."""
        if not path.startswith("/"):
            path = "/" + path
        with self.lock:
            seed = len(self.files) if seed is None else seed
            self.files[path] = FakeFile(size=size, seed=seed, **options)
        return self.base_url + path

    def file(self, url_or_path: str) -> FakeFile:
        return self.files[url_or_path.removeprefix(self.base_url)]

    def expire(self, url_or_path: str) -> None:
        self.file(url_or_path).status = 404


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client went away mid-request (a killed worker): nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    cdn: FakeCdn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_POST(self) -> None:
        cdn = self.cdn
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] != "/storage/auth/token" or cdn.token_key is None:
            self._empty(404)
        elif self.headers.get("Authorization") != f"Key {cdn.token_key}":
            self._empty(401)
        else:
            cdn.tokens_issued += 1
            body = json.dumps({"token": cdn.token, "expires_at": "2099-01-01T00:00:00Z"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _serve(self, body: bool) -> None:
        file = self.cdn.files.get(self.path.split("?")[0])
        if file is not None and body:
            with self.cdn.lock:
                file.requests.append(self.headers.get("Range", ""))
                file.authorizations.append(self.headers.get("Authorization", ""))
        if file is not None and file.bearer and self.headers.get("Authorization") != f"Bearer {file.bearer}":
            self._empty(file.denied_status)
            return
        if file is None or file.status is not None:
            self._empty(file.status if file and file.status else 404, file.retry_after if file else None)
            return
        if file.redirect_to:
            self.send_response(302)
            self.send_header("Location", file.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = 0, file.size
        match = _RANGE.match(self.headers.get("Range", "")) if file.ranges else None
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, file.size) if match.group(2) else file.size
            if start >= file.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{file.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{file.size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", file.content_type)
        if file.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if file.send_length:
            self.send_header("Content-Length", str(end - start))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self._body(file, start, end)

    def _body(self, file: FakeFile, start: int, end: int) -> None:
        cut = None
        with self.cdn.lock:
            if file.truncate_at is not None and file.truncate_times > 0 and start < file.truncate_at:
                file.truncate_times -= 1
                cut = file.truncate_at
        try:
            for chunk in file.iter_bytes(start, min(end, cut) if cut is not None else end, 64 * 1024):
                self.wfile.write(chunk)
                if file.slow_delay:
                    time.sleep(file.slow_delay)
        except (BrokenPipeError, ConnectionResetError):
            return
        if cut is not None or not file.send_length:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)

    def _empty(self, status: int, retry_after: int | None = None) -> None:
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Length", "0")
        self.end_headers()

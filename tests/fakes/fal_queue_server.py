"""A local stand-in for fal's APIs: ``GET /{owner}/{app}/requests/{request_id}`` answers the
stored result when ``Authorization: Key <key>`` matches, as queue.fal.run does, and
``POST /storage/auth/token`` answers what ``token_answer`` says (rest.fal.ai's CDN token)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


class FalQueueServer:
    def __init__(self, key: str) -> None:
        self.key = key
        self.results: dict[str, tuple[int, object]] = {}  # path -> (status, JSON body)
        self.requests: list[tuple[str, str]] = []  # (path, Authorization header)
        # The CDN token endpoint's answer to the right key: (status, body, raw bytes instead).
        self.token_answer: tuple[int, object] = (
            200,
            {"token": "cdn-token", "expires_at": "2099-01-01T00:00:00Z"},
        )
        self.token_raw: bytes | None = None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def set_result(self, app: str, request_id: str, body: object, status: int = 200) -> None:
        with self._lock:
            self.results[f"/{app}/requests/{request_id}"] = (status, body)

    def __enter__(self) -> FalQueueServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _respond(self, path: str, authorization: str) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append((path, authorization))
            found = self.results.get(path)
        if authorization != f"Key {self.key}":
            return 401, b'{"detail": "Unauthorized"}'
        if found is None:
            return 404, b'{"detail": "Request not found"}'
        status, body = found
        return status, body if isinstance(body, bytes) else json.dumps(body).encode()

    def _token(self, path: str, authorization: str) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append((path, authorization))
        if path.split("?")[0] != "/storage/auth/token":
            return 404, b'{"detail": "Not Found"}'
        if authorization != f"Key {self.key}":
            return 401, b'{"detail": "Unauthorized"}'
        status, body = self.token_answer
        return status, self.token_raw if self.token_raw is not None else json.dumps(body).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._send(*server._respond(self.path, self.headers.get("Authorization", "")))

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(*server._token(self.path, self.headers.get("Authorization", "")))

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

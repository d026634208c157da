"""A local stand-in for fal's JWKS endpoint, plus helpers to sign fal-style webhooks
(tests, benchmarks and the offline demo, which signs the webhooks it sends).

The key set can be swapped while running (to simulate fal rotating keys), the server can
be made to fail, and it counts the requests it served.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

JWKS_PATH = "/.well-known/jwks.json"


def jwk(private_key: Ed25519PrivateKey, kid: str = "test") -> dict[str, str]:
    """The public JWK of ``private_key``, shaped like fal's (unpadded base64url ``x``)."""
    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}


def jwks(*private_keys: Ed25519PrivateKey) -> dict[str, object]:
    return {"keys": [jwk(key, kid=f"k{i}") for i, key in enumerate(private_keys)]}


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs: request id, user id, timestamp and hex(sha256(body)), one a
    line. The dev kit may not import jobs, so this spells fal's scheme a second time;
    tests/test_fal_signature.py checks that jobs.fal.signature accepts what it signs."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([request_id, user_id, timestamp, digest]).encode("utf-8")


def signed_headers(
    private_key: Ed25519PrivateKey,
    body: bytes,
    *,
    timestamp: int,
    request_id: str = "req-1",
    user_id: str = "user-1",
) -> dict[str, str]:
    """The four X-Fal-Webhook-* headers fal would send for ``body``."""
    ts = str(timestamp)
    signature = private_key.sign(signed_message(request_id, user_id, ts, body))
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": ts,
        "X-Fal-Webhook-Signature": signature.hex(),
    }


class JwksServer:
    """Serve a JWKS on 127.0.0.1 from a background thread; use as a context manager."""

    def __init__(self, document: object | None = None) -> None:
        self._lock = threading.Lock()
        self._document: object = document if document is not None else {"keys": []}
        self._status = 200
        self._requests = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval keeps stop() (and so each test) fast.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{JWKS_PATH}"

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._requests

    def set_document(self, document: object) -> None:
        """Swap the served key set (e.g. to simulate key rotation)."""
        with self._lock:
            self._document = document

    def set_status(self, status: int) -> None:
        """Answer every request with ``status`` (200 serves the document)."""
        with self._lock:
            self._status = status

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _respond(self) -> tuple[int, bytes]:
        with self._lock:
            self._requests += 1
            status, document = self._status, self._document
        if status != 200:
            return status, b'{"error": "unavailable"}'
        return 200, json.dumps(document).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                status, body = server._respond()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler

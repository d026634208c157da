"""The web process as deployed (gunicorn + gunicorn.conf.py): malformed request bodies the
test client cannot send."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.config import Config
from db.connection import Connection
from tests.gunicorn_server import gunicorn
from tests.helpers import ledger_rows
from tests.jwks_server import JwksServer, jwks, signed_headers

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
FAL_TIMEOUT = 15.0


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def web_config(config: Config, key: Ed25519PrivateKey) -> Iterator[Config]:
    with JwksServer(jwks(key)) as jwks_server:
        yield config.replace(fal_jwks_urls=(jwks_server.url,), app_webhook_secret=SECRET)


def raw_request(base_url: str, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` as is on a new connection; return everything the server answers."""
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def fal_webhook(key: Ed25519PrivateKey, request_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"request_id": request_id, "status": "OK", "payload": {"video": {
        "url": f"https://v3b.fal.media/files/b/t/{request_id}.mp4"}}}).encode()
    headers = signed_headers(key, body, timestamp=int(time.time()), request_id=request_id,
                             user_id="user-1")
    return body, {**headers, "Content-Type": "application/json"}


# Each is a chunked body gunicorn's reader refuses partway, after the view started reading.
MALFORMED_CHUNKS = {
    "size not hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk longer than its size": b"2\r\n{\"a\": 1}\r\n0\r\n\r\n",
    "bad extension": b"2;\x01\r\n{}\r\n0\r\n\r\n",
    "bad trailer": b"2\r\n{}\r\n0\r\nno colon here\r\n\r\n",
    "ends mid-chunk": b"10\r\n{}",
}


def test_malformed_chunked_bodies_are_400_on_both_webhooks(
    web_config: Config, conn: Connection, tmp_path: Path
) -> None:
    with gunicorn(web_config, tmp_path / "gunicorn.log") as base_url:
        host = urlsplit(base_url).netloc
        answers = {}
        for path in ("/webhooks/fal", "/webhooks/app"):
            for name, body in MALFORMED_CHUNKS.items():
                head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                        f"X-Falback-Secret: {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
                answers[path, name] = status_of(raw_request(base_url, head + body))
        # The server still answers after all of them.
        assert requests.get(f"{base_url}/ping", timeout=5).status_code == 200
    assert answers == {case: 400 for case in answers}
    assert ledger_rows(conn) == []
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()

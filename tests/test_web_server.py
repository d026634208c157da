"""The web process as deployed (gunicorn + gunicorn.conf.py): malformed request bodies the
test client cannot send, slow clients, the body deadline and the Postgres slots."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.config import Config
from db.connection import Connection, fetch_one
from tests.fakes.jwks_server import JwksServer, jwks, signed_headers
from tests.support.gunicorn import gunicorn
from tests.support.rows import ledger_rows
from tests.support.slow_clients import SlowClients

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
    body = json.dumps(
        {
            "request_id": request_id,
            "status": "OK",
            "payload": {"video": {"url": f"https://v3b.fal.media/files/b/t/{request_id}.mp4"}},
        }
    ).encode()
    headers = signed_headers(key, body, timestamp=int(time.time()), request_id=request_id, user_id="user-1")
    return body, {**headers, "Content-Type": "application/json"}


# Each is a chunked body gunicorn's reader refuses partway, after the view started reading.
MALFORMED_CHUNKS = {
    "size not hex": b"zz\r\n{}\r\n0\r\n\r\n",
    "chunk longer than its size": b'2\r\n{"a": 1}\r\n0\r\n\r\n',
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
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"X-Falback-Secret: {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\n"
                ).encode()
                answers[path, name] = status_of(raw_request(base_url, head + body))
        # The server still answers after all of them.
        assert requests.get(f"{base_url}/ping", timeout=5).status_code == 200
    assert answers == {case: 400 for case in answers}
    assert ledger_rows(conn) == []
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


def test_webhooks_are_answered_while_slow_clients_hold_connections(
    key: Ed25519PrivateKey, web_config: Config, conn: Connection, tmp_path: Path
) -> None:
    with gunicorn(web_config, tmp_path / "gunicorn.log", extra_env={"WEB_BODY_TIMEOUT": "3"}) as base_url:
        with SlowClients(base_url, 50) as slow:
            time.sleep(1)  # every slow client is inside the app, reading its body
            results: list[tuple[int, float]] = []

            def deliver(n: int) -> None:
                body, headers = fal_webhook(key, f"req-slow-{n}")
                start = time.monotonic()
                status = requests.post(
                    f"{base_url}/webhooks/fal", data=body, headers=headers, timeout=FAL_TIMEOUT
                ).status_code
                results.append((status, time.monotonic() - start))
                start = time.monotonic()
                status = requests.get(f"{base_url}/ping", timeout=FAL_TIMEOUT).status_code
                results.append((status, time.monotonic() - start))

            threads = [threading.Thread(target=deliver, args=(n,)) for n in range(10)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # Past the body deadline the slow clients got 408, and were replaced by new ones.
            time.sleep(4)
            answers = dict(slow.answers)
    assert [status for status, _ in results] == [200] * 20
    assert all(seconds < FAL_TIMEOUT for _, seconds in results)
    assert len(ledger_rows(conn)) == 10
    # (Some 408s arrive as resets: gunicorn closes with the trickled bytes unread.)
    assert sum(answers.values()) >= 50 and answers.get("408", 0) > 0
    assert set(answers) <= {"408", "reset"}


def test_a_body_still_arriving_after_the_deadline_gets_408_and_the_connection_closes(
    web_config: Config, conn: Connection, tmp_path: Path
) -> None:
    with gunicorn(web_config, tmp_path / "gunicorn.log", extra_env={"WEB_BODY_TIMEOUT": "1"}) as base_url:
        host = urlsplit(base_url).netloc
        with socket.create_connection(("127.0.0.1", int(host.split(":")[1])), timeout=10) as sock:
            sock.sendall(
                f"POST /webhooks/app HTTP/1.1\r\nHost: {host}\r\nX-Falback-Secret: {SECRET}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
            )
            start = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            elapsed = time.monotonic() - start
    assert status_of(answer) == 408 and b"did not arrive in time" in answer
    assert 0.5 < elapsed < 5  # answered at the deadline, then closed (recv saw the end)
    assert ledger_rows(conn) == []


def test_postgres_connections_per_process_are_bounded(
    key: Ed25519PrivateKey, web_config: Config, conn: Connection, tmp_path: Path
) -> None:
    """Sixty webhooks at once on one process with two Postgres slots: all recorded, and
    Postgres never sees more than two connections from the web process."""
    deliveries = [fal_webhook(key, f"req-burst-{n}") for n in range(60)]
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'falback-web'"
                )
                row = fetch_one(cur)
            conn.rollback()
            peak = max(peak, int(row["n"]) if row else 0)
            time.sleep(0.005)

    with gunicorn(web_config, tmp_path / "gunicorn.log", workers=1, threads=2) as base_url:
        watcher = threading.Thread(target=watch)
        watcher.start()
        barrier = threading.Barrier(len(deliveries))
        statuses: list[int] = []

        def deliver(body: bytes, headers: dict[str, str]) -> None:
            barrier.wait()
            statuses.append(
                requests.post(
                    f"{base_url}/webhooks/fal", data=body, headers=headers, timeout=FAL_TIMEOUT
                ).status_code
            )

        threads = [threading.Thread(target=deliver, args=d) for d in deliveries]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        watcher.join()
    assert statuses == [200] * len(deliveries)
    assert len(ledger_rows(conn)) == len(deliveries)
    assert 1 <= peak <= 2


def test_a_silent_postgres_is_a_503_within_fals_15_s(web_config: Config, tmp_path: Path) -> None:
    """libpq's connect_timeout does not apply to connections waited on through gevent;
    without a bound of our own the request would wait for ever, holding a slot."""
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        config = web_config.replace(
            database_url=f"postgresql://falback@127.0.0.1:{port}/falback?sslmode=disable"
        )
        body = json.dumps({"type": "INSERT", "table": "gen_videos", "record": {"id": 1}}).encode()
        with gunicorn(config, tmp_path / "gunicorn.log") as base_url:
            start = time.monotonic()
            response = requests.post(
                f"{base_url}/webhooks/app",
                data=body,
                timeout=FAL_TIMEOUT,
                headers={"X-Falback-Secret": SECRET, "Content-Type": "application/json"},
            )
            elapsed = time.monotonic() - start
    assert response.status_code == 503 and response.json() == {"error": "database unavailable; retry later"}
    assert elapsed < FAL_TIMEOUT

"""Stopping processes mid-work: a worker SIGTERMed mid-upload finishes the file within a
bound or hands the row back at once (no lease left to run out), and gunicorn SIGTERMed
mid-request finishes the webhook it was reading."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from jobs.worker import SHUTDOWN_GRACE_SECONDS
from tests.fakes.cdn import FakeCdn
from tests.fakes.jwks_server import JwksServer, jwks, signed_headers
from tests.support.gunicorn import gunicorn
from tests.support.rows import add_video, ledger_rows
from tests.support.wait import wait_for
from tests.support.workers import children, worker_process

MiB = 1024 * 1024


def _copying(conn: Connection) -> bool:
    conn.rollback()
    return any(r["status"] == "copying" for r in ledger_rows(conn))


def _horse(worker: subprocess.Popen[str]) -> int:
    """The work horse: the worker's child that leads a process group of its own."""
    horse: int | None = wait_for(
        lambda: next((c for c in children(worker.pid) if os.getpgid(c) == c), None), 10, "a work horse"
    )
    assert horse is not None
    return horse


def _copying_worker(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn, seconds: float, options: tuple[str, ...]
) -> tuple[subprocess.Popen[str], int | None]:
    """A worker (and its work horse, with --fork) copying one 4 MiB upscale whose source
    takes about `seconds` to send."""
    add_video(conn, cdn, 1, size=1000, upscale_size=4 * MiB, slow_delay=seconds / 64)
    backfill(config, conn, redis, "upscale", 10)
    worker = worker_process(config, *options)
    wait_for(lambda: _copying(conn), 20, "the copy to start")
    return worker, _horse(worker) if "--fork" in options else None


def _stopped(worker: subprocess.Popen[str], within: float) -> float:
    started = time.monotonic()
    try:
        worker.wait(within)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        pytest.fail(f"the worker did not exit within {within}s of SIGTERM")
    return time.monotonic() - started


# `falback worker` runs jobs in process; `--fork` gives each job a work horse.
MODES = [pytest.param((), id="in process"), pytest.param(("--fork",), id="fork")]


@pytest.mark.parametrize(
    ("options", "who"),
    [((), "worker"), (("--fork",), "worker"), (("--fork",), "worker and horse")],
    ids=["in process", "fork", "fork, worker and horse"],
)
def test_sigterm_mid_upload_hands_the_row_back_after_the_grace(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn, options: tuple[str, ...], who: str
) -> None:
    # "worker and horse": a platform that signals every process of the container.
    worker, horse = _copying_worker(config, conn, redis, cdn, 120, options)
    os.kill(worker.pid, signal.SIGTERM)
    if who == "worker and horse":
        assert horse is not None
        os.kill(horse, signal.SIGTERM)
    took = _stopped(worker, SHUTDOWN_GRACE_SECONDS + 10)
    assert SHUTDOWN_GRACE_SECONDS - 1 <= took <= SHUTDOWN_GRACE_SECONDS + 5
    [row] = [r for r in ledger_rows(conn) if r["kind"] == "upscale"]
    assert row["status"] == "retrying", row
    assert row["claimed_by"] is None and row["lease_expires_at"] is None
    assert "shutting down" in row["last_error"]


@pytest.mark.parametrize("options", MODES)
def test_a_second_sigterm_hands_the_row_back_at_once(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn, options: tuple[str, ...]
) -> None:
    worker, _ = _copying_worker(config, conn, redis, cdn, 120, options)
    os.kill(worker.pid, signal.SIGTERM)
    time.sleep(1.5)  # RQ ignores a repeat within a second (a pool's duplicate)
    os.kill(worker.pid, signal.SIGTERM)
    assert _stopped(worker, 8) < 6
    [row] = [r for r in ledger_rows(conn) if r["kind"] == "upscale"]
    assert row["status"] == "retrying" and row["lease_expires_at"] is None, row


@pytest.mark.parametrize("options", MODES)
def test_sigterm_lets_a_job_that_ends_within_the_grace_finish(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn, options: tuple[str, ...]
) -> None:
    worker, _ = _copying_worker(config, conn, redis, cdn, 3, options)
    os.kill(worker.pid, signal.SIGTERM)
    assert _stopped(worker, SHUTDOWN_GRACE_SECONDS + 5) < SHUTDOWN_GRACE_SECONDS
    [row] = [r for r in ledger_rows(conn) if r["kind"] == "upscale"]
    assert row["status"] == "done", row


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_gunicorn_sigterm_finishes_the_webhook_it_is_reading(
    config: Config, conn: Connection, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """A webhook whose body is still arriving when gunicorn gets SIGTERM is answered and
    recorded: gunicorn's graceful stop lets requests in flight end."""
    request_id = "5157e2a0-0000-4000-8000-000000000001"
    body = json.dumps(
        {"request_id": request_id, "status": "OK",
         "payload": {"video": {"url": f"https://v3b.fal.media/files/b/t/{request_id}.mp4"}}}
    ).encode()  # fmt: skip
    headers = signed_headers(key, body, timestamp=int(time.time()), request_id=request_id, user_id="u")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with JwksServer(jwks(key)) as jwks_server:
        web = config.replace(fal_jwks_urls=(jwks_server.url,))
        with gunicorn(web, tmp_path / "gunicorn.log", workers=1) as base_url:
            [master] = [
                p for p in children(os.getpid()) if b"gunicorn" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
            with socket.create_connection(("127.0.0.1", int(base_url.rsplit(":", 1)[1])), timeout=20) as sock:
                sock.sendall(
                    f"POST /webhooks/fal HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n{head}Connection: close\r\n\r\n".encode()
                    + body[:10]
                )
                time.sleep(0.5)
                os.kill(master, signal.SIGTERM)
                time.sleep(1.0)  # gunicorn is stopping now, the body not complete yet
                sock.sendall(body[10:])
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    conn.rollback()
    assert [r["fal_request_id"] for r in ledger_rows(conn)] == [request_id]

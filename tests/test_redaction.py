"""Secrets never reach logs or the ledger: signed source URLs (?token=...), Drive upload
session ids (upload_id=..., a capability), Authorization values, configured secrets.

The end-to-end tests run a real copy that fails (a signed source URL, a Drive upload
whose chunks keep failing) at DEBUG, where urllib3 logs every request target, once in a
worker process and once in this one, and look for the secrets in everything logged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import requests
from redis import Redis

from core.config import Config
from core.logs import REDACTED, add_secrets, redact, setup_logging
from db import attempts
from db.connection import Connection
from jobs.backfill import backfill
from jobs.queues import worker_queues
from jobs.worker import make_worker
from tests.fakes.cdn import FakeCdn
from tests.support.drive import CHUNK, Drive
from tests.support.rows import ledger_rows

TOKEN = "sig-0f8c2d71b9e4"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('127.0.0.1:80 "GET /files/b/x/a.mp4?token=sig-1234 HTTP/1.1" 200 5', "sig-1234"),
        ("Max retries exceeded with url: /x.mp4?identity=abc123 (Caused by ...)", "abc123"),
        ("https://v3b.fal.media/files/b/x/a.mp4?identity=abc123#frag", "abc123"),
        ('"PUT /upload/drive/v3/files?uploadType=resumable&upload_id=ADPyc-xyz HTTP/1.1"', "ADPyc-xyz"),
        ("session upload_id=ADPyc-xyz", "ADPyc-xyz"),
        ("{'upload_id': 'ADPyc-xyz'}", "ADPyc-xyz"),
        ("Authorization: Bearer ya29.a0AfH6", "ya29.a0AfH6"),
        ("{'Authorization': 'Key 1a2b3c:4d5e6f7a'}", "1a2b3c:4d5e6f7a"),
        ("sent Key 1a2b3c:4d5e6f7a", "1a2b3c:4d5e6f7a"),
        ("redis://:hunter22@cache:6379/0", "hunter22"),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----", "MIIEvQIBADANBg"),
    ],
)
def test_redact_removes_each_kind_of_secret(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and REDACTED in redacted
    assert redact(redacted) == redacted


def test_ordinary_text_is_left_alone() -> None:
    for text in (
        "ledger 5 job backup-5: done: 100 bytes, md5 0cc1, at local /b/5-a.png",
        "Key not found; is it on/off? yes",
        "GET /files/b/x/a.mp4 HTTP/1.1",
    ):
        assert redact(text) == text


def test_configured_secret_values_are_masked() -> None:
    add_secrets(["fal-key-id:0123456789abcdef", "short"])
    assert redact("value fal-key-id:0123456789abcdef here") == f"value {REDACTED} here"
    assert redact("short") == "short"  # too short to mask safely


def test_the_ledger_stores_errors_redacted(
    conn: Connection, config: Config, cdn: FakeCdn, redis: Redis
) -> None:
    """last_error goes through the same redaction, whoever writes it."""
    add_signed_video(conn, cdn, 10)
    backfill(config, conn, redis, "all", 10)
    row_id = ledger_rows(conn)[0]["id"]
    assert attempts.claim(conn, row_id, "w", 60)
    leak = f"could not reach https://v3b.fal.media/x.mp4?token={TOKEN}; Authorization: Bearer {TOKEN}"
    assert attempts.record_retry(conn, row_id, "w", leak, 60)
    conn.commit()
    stored = ledger_rows(conn)[0]["last_error"]
    assert TOKEN not in stored and stored.count(REDACTED) == 2


def add_signed_video(conn: Connection, cdn: FakeCdn, size: int) -> str:
    """A video whose URL is signed, as fal's `?identity=` / `?token=` URLs are."""
    url = cdn.add("/files/b/t/signed.mp4", size, seed=7) + f"?token={TOKEN}"
    with conn.cursor() as cur:
        cur.execute("INSERT INTO gen_videos (video_url, file_size) VALUES (%s, %s)", (url, size))
    conn.commit()
    return url


def failing_drive_copy(config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive) -> None:
    """A copy that reads the signed source and opens a Drive upload session, whose chunks
    then fail every time (the attempt ends 'retrying')."""
    add_signed_video(conn, cdn, 6 * CHUNK + 123)  # above the multipart limit: resumable
    drive.emulator.faults.add("server_error", 100, status=503)
    backfill(config, conn, redis, "all", 10)


def secrets_in(text: str, drive: Drive) -> list[str]:
    upload_ids = [s.id for s in drive.emulator.sessions()]
    assert upload_ids, "the copy got as far as an upload session"
    return [s for s in (TOKEN, *upload_ids) if s in text]


def assert_clean_ledger(conn: Connection, drive: Drive) -> None:
    [row] = ledger_rows(conn)
    assert row["status"] == "retrying", row["last_error"]
    assert secrets_in(f"{row['source_url']}", drive) == [TOKEN]  # the URL itself is data
    assert secrets_in(f"{row['last_error']}", drive) == []


def test_a_debug_worker_process_logs_no_secret(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    failing_drive_copy(drive_config, conn, cdn, redis, drive)
    result = subprocess.run(
        [sys.executable, "-m", "falback", "worker", "--burst"],
        env={**os.environ, **drive_config.as_env(), "FALBACK_LOG_LEVEL": "DEBUG"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    output = result.stdout + result.stderr
    # urllib3 logged the request targets (the test would see a leak), without the secrets.
    assert '"GET /files/b/t/signed.mp4?[redacted] HTTP/1.1"' in output
    assert '"PUT /upload/drive/v3/files?[redacted] HTTP/1.1" 503' in output
    assert "attempt 1 failed, retrying" in output
    assert secrets_in(output, drive) == []
    assert_clean_ledger(conn, drive)


def test_an_in_process_worker_logs_no_secret(
    drive_config: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    drive: Drive,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same through pytest's own handler (a handler falback did not create), plus a
    traceback whose chained requests exception carries the signed URL."""
    setup_logging()  # puts redaction on pytest's handler too (it sets the root's level first)
    caplog.set_level(logging.DEBUG)
    failing_drive_copy(drive_config, conn, cdn, redis, drive)
    worker = make_worker(drive_config, redis, worker_queues(redis), fork=False)
    try:
        worker.work(burst=True)
    finally:
        worker.context.close()
    try:
        requests.get(f"http://127.0.0.1:1/files/b/t/signed.mp4?token={TOKEN}", timeout=2)
    except requests.RequestException:
        logging.getLogger("rq.worker").exception("job failed")
    assert f"signed.mp4?token={TOKEN}" not in caplog.text
    assert "Traceback" in caplog.text and "signed.mp4?[redacted]" in caplog.text
    assert '"PUT /upload/drive/v3/files?[redacted] HTTP/1.1" 503' in caplog.text  # urllib3's lines
    assert secrets_in(caplog.text, drive) == []
    assert secrets_in("\n".join(r.getMessage() for r in caplog.records), drive) == []
    assert_clean_ledger(conn, drive)

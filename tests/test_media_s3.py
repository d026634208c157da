"""The media resolver with S3 copies: a redirect to a short-lived presigned link that the
real S3 server (moto, through the counting proxy) answers with the bytes; and, with
several copies, the next one when the first cannot be read."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import requests
from flask.testing import FlaskClient
from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.support.drive import Drive
from tests.support.rows import add_video, ledger_rows
from tests.support.s3 import Bucket
from tests.support.wait import wait_for
from tests.support.web import create_app_for
from tests.support.workers import run_worker

SIZE = 200_000


def backed_up_and_expired(config: Config, conn: Connection, cdn: FakeCdn, redis: Redis) -> str:
    """One video copied by a real job, then past fal's window; its source URL."""
    add_video(conn, cdn, 1, size=SIZE)
    backfill(config, conn, redis, "all", 10)
    run_worker(config)
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET expires_at = now() - interval '1 hour'")
    conn.commit()
    [row] = ledger_rows(conn)
    assert row["status"] == "done", row["last_error"]
    return str(row["source_url"])


def s3_link(client: FlaskClient, src: str, s3: Bucket, method: str = "GET") -> str:
    answer = client.open("/media", method=method, query_string={"src": src})
    assert answer.status_code == 302, answer.data
    location = answer.headers["Location"]
    assert location.startswith(s3.proxy.url + f"/{s3.name}/")
    assert answer.headers["Cache-Control"] == "private, max-age=300"
    return location


def test_an_s3_copy_is_a_redirect_to_a_presigned_link(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    src = backed_up_and_expired(s3_config, conn, cdn, redis)
    body = b"".join(cdn.file(src).iter_bytes())
    client = create_app_for(s3_config).test_client()
    location = s3_link(client, src, s3)
    assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == ["900"]
    s3.proxy.clear()
    got = requests.get(location, timeout=10)
    assert got.status_code == 200 and got.content == body
    assert got.headers["Content-Type"] == "video/mp4"
    assert got.headers["Content-Disposition"] == "inline; filename*=UTF-8''video-1.mp4"
    part = requests.get(location, headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == body[100:200]
    # The bytes came from the store, by the link (the proxy counts a request once it has
    # answered it).
    wait_for(lambda: s3.proxy.ops() == {"GetObject": 2}, 5, "the proxy to count both GETs")
    # HEAD gets a link signed for HEAD (a GET link would not match its signature).
    head = requests.head(s3_link(client, src, s3, "HEAD"), timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(SIZE)


def test_an_unreadable_drive_copy_falls_back_to_the_s3_copy(
    drive_s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, s3: Bucket
) -> None:
    src = backed_up_and_expired(drive_s3_config, conn, cdn, redis)
    body = b"".join(cdn.file(src).iter_bytes())
    client = create_app_for(drive_s3_config).test_client()
    # Drive is the first preference: streamed from there while it answers.
    first = client.get("/media", query_string={"src": src})
    assert first.status_code == 200 and first.data == body
    # Drive fails: the S3 copy, not a 502.
    drive.emulator.faults.add("server_error", 1, on="media", status=500)
    assert requests.get(s3_link(client, src, s3), timeout=10).content == body
    assert drive.emulator.faults.pending == []
    # Drive lost the file: the S3 copy, not a 404.
    [in_drive] = drive.backups()
    drive.emulator.remove(in_drive.id)
    assert requests.get(s3_link(client, src, s3), timeout=10).content == body

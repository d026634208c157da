"""Helpers for the S3 tests (the fixtures are in tests/conftest.py).

Only the endpoint differs from production: the code under test is boto3 talking HTTP to
an S3 server (moto's), through a counting proxy (tests/fakes/s3_server.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import urllib.request
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from redis import Redis

from core.config import Config
from db.connection import Connection, fetch_one
from jobs import backup
from jobs.backfill import backfill
from jobs.worker import WorkerContext
from tests.fakes.cdn import FakeCdn
from tests.fakes.s3_server import S3Proxy
from tests.support.rows import add_video, ledger_rows

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: a few MiB cross several part boundaries
ACCESS_KEY_ID = "AKIAFALBACKTEST00001"
SECRET = "test-secret-ZmFsYmFjay1zMy10ZXN0LXNlY3JldA"


@dataclass
class Bucket:
    name: str
    moto_url: str
    proxy: S3Proxy
    admin: Any  # a boto3 client straight to moto, for the test's own looks

    def objects(self) -> dict[str, int]:
        listed = self.admin.list_objects_v2(Bucket=self.name).get("Contents") or []
        return {o["Key"]: int(o["Size"]) for o in listed}

    def head(self, key: str) -> dict[str, Any]:
        return dict(self.admin.head_object(Bucket=self.name, Key=key))

    def md5(self, key: str) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        body = self.admin.get_object(Bucket=self.name, Key=key)["Body"]
        for block in iter(lambda: body.read(MiB), b""):
            digest.update(block)
        return digest.hexdigest()

    def uploads(self) -> list[dict[str, Any]]:
        """Multipart uploads in progress."""
        return list(self.admin.list_multipart_uploads(Bucket=self.name).get("Uploads") or [])

    def put(self, key: str, body: bytes, **metadata: str) -> None:
        self.admin.put_object(Bucket=self.name, Key=key, Body=body, Metadata=metadata)


def s3_env(bucket: Bucket, **overrides: str) -> dict[str, str]:
    env = {
        "FALBACK_S3_BUCKET": bucket.name,
        "FALBACK_S3_ENDPOINT_URL": bucket.proxy.url,
        "FALBACK_S3_REGION": "us-east-1",
        "FALBACK_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "FALBACK_S3_SECRET_ACCESS_KEY": SECRET,
        "FALBACK_S3_PART_SIZE": str(PART),
        "FALBACK_S3_MAX_ATTEMPTS": "2",
        "FALBACK_S3_TIMEOUT": "20",
    }
    return {**env, **overrides}


def moto_admin(url: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIAADMIN",
        aws_secret_access_key="admin",
        # moto answers GETs of a multipart object with its composite checksum as if it were
        # the whole object's; the test reads the bytes and hashes them itself.
        config=BotoConfig(s3={"addressing_style": "path"}, response_checksum_validation="when_required"),
    )


def moto_post(url: str, path: str, body: bytes = b"") -> None:
    request = urllib.request.Request(
        url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        json.loads(answer.read() or b"{}")


def parts_of(size: int, part: int = PART) -> int:
    return max(math.ceil(size / part), 1)


def s3_row(conn: Connection) -> dict[str, Any]:
    """The one ledger row, with its s3_uploads state when it has one."""
    [row] = ledger_rows(conn)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT bucket, key, upload_id, part_size, sent_size, sent_md5 FROM s3_uploads"
            " WHERE ledger_id = %s",
            (row["id"],),
        )
        state = fetch_one(cur)
    conn.commit()
    empty = dict.fromkeys(("bucket", "key", "upload_id", "part_size", "sent_size", "sent_md5"))
    return {**row, **(state or empty)}


def run_job(config: Config, ledger_id: int) -> object:
    assert config.redis_url
    context = WorkerContext(config, Redis.from_url(config.redis_url))
    try:
        return backup.backup_file(context, ledger_id)
    finally:
        context.close()


def one_file(config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, size: int, **options: Any) -> int:
    """A gen_videos row with one file of `size` bytes, in the ledger; its ledger id."""
    add_video(conn, cdn, 1, size=size, **options)
    backfill(config, conn, redis, "all", 10)
    [row] = ledger_rows(conn)
    return int(row["id"])


def assert_one_verified_object(s3: Bucket, cdn: FakeCdn, row: dict[str, Any]) -> None:
    source = cdn.file(row["source_url"])
    assert row["status"] == "done" and row["destination"] == "s3", row["last_error"]
    key = row["destination_id"]
    assert row["destination_url"] == f"s3://{s3.name}/{key}"
    assert s3.objects() == {key: source.size}
    assert s3.md5(key) == source.md5() == row["md5"] and row["size_bytes"] == source.size
    metadata = s3.head(key)["Metadata"]
    assert (metadata["md5"], metadata["size"], metadata["ledger-id"]) == (
        source.md5(),
        str(source.size),
        str(row["id"]),
    )
    assert s3.uploads() == []

"""S3's refusals in the job's terms: bad credentials and a missing bucket end the row with
a fix in plain words and no secret; throttling, 5xx and an unreachable endpoint are
retried, with the server's Retry-After."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import boto3
import pytest
from redis import Redis

from core.config import Config
from db.connection import Connection
from tests.fakes.cdn import FakeCdn
from tests.fakes.s3_server import Fault
from tests.support.s3 import ACCESS_KEY_ID, SECRET, Bucket, moto_post, one_file, run_job, s3_env, s3_row

ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'


def iam_key(s3: Bucket, user: str, policy: str | None) -> dict[str, str]:
    """An access key of a new IAM user in moto, allowed `policy` (nothing when None)."""
    iam = boto3.session.Session().client(
        "iam",
        endpoint_url=s3.moto_url,
        region_name="us-east-1",
        aws_access_key_id="AKIAADMIN",
        aws_secret_access_key="admin",
    )
    iam.create_user(UserName=user)
    if policy:
        iam.put_user_policy(UserName=user, PolicyName="backups", PolicyDocument=policy)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ("unknown key", "does not know FALBACK_S3_ACCESS_KEY_ID; copy the access key id again"),
        ("wrong secret", "FALBACK_S3_SECRET_ACCESS_KEY does not match FALBACK_S3_ACCESS_KEY_ID"),
        ("no permission", "the access key may not do this in bucket fal-backups"),
    ],
)
def test_bad_credentials_fail_the_row_with_a_readable_secret_free_reason(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, credentials: str, expected: str
) -> None:
    user = iam_key(s3, "falback", None)
    key_id, secret = {
        "unknown key": (ACCESS_KEY_ID, SECRET),
        "wrong secret": (user["id"], SECRET),
        "no permission": (user["id"], user["secret"]),
    }[credentials]
    chosen = config.replace(
        s3_env=s3_env(s3, FALBACK_S3_ACCESS_KEY_ID=key_id, FALBACK_S3_SECRET_ACCESS_KEY=secret)
    )
    ledger_id = one_file(chosen, conn, cdn, redis, 10_000)
    moto_post(s3.moto_url, "/moto-api/reset-auth", b"0")  # from now on moto checks every request
    assert run_job(chosen, ledger_id) == "failed"
    row = s3_row(conn)
    assert row["attempts"] == 1 and expected in row["last_error"], row["last_error"]
    for secret_value in (secret, key_id, user["secret"]):
        assert secret_value not in row["last_error"]
    assert cdn.file(row["source_url"]).requests == []  # refused before the source was read


def test_a_working_key_with_full_access(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    user = iam_key(s3, "falback", ALLOW_ALL)
    chosen = config.replace(
        s3_env=s3_env(s3, FALBACK_S3_ACCESS_KEY_ID=user["id"], FALBACK_S3_SECRET_ACCESS_KEY=user["secret"])
    )
    ledger_id = one_file(chosen, conn, cdn, redis, 10_000)
    moto_post(s3.moto_url, "/moto-api/reset-auth", b"0")
    assert run_job(chosen, ledger_id) == "done"


def test_a_missing_bucket_says_to_create_it(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    chosen = config.replace(s3_env=s3_env(s3, FALBACK_S3_BUCKET="no-such-bucket"))
    ledger_id = one_file(chosen, conn, cdn, redis, 10_000)
    assert run_job(chosen, ledger_id) == "failed"
    assert "there is no bucket no-such-bucket at http://127.0.0.1" in s3_row(conn)["last_error"]


@pytest.mark.parametrize(
    ("status", "code"), [(503, "SlowDown"), (500, "InternalError"), (429, "TooManyRequests")]
)
def test_throttling_and_5xx_are_retried_after_the_servers_retry_after(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, status: int, code: str
) -> None:
    ledger_id = one_file(s3_config, conn, cdn, redis, 10_000)
    s3.proxy.add(Fault("PutObject", "status", status=status, code=code, retry_after=40, times=2))
    started = datetime.now(UTC)
    assert run_job(s3_config, ledger_id) != "done"
    row = s3_row(conn)
    assert row["status"] == "retrying" and f"{status} {code}" in row["last_error"]
    assert "will try again" in row["last_error"]
    assert (row["next_attempt_at"] - started).total_seconds() >= 39  # not the 1 s backoff
    assert s3.proxy.ops(ok=False).get("PutObject") is None  # both tries answered by the fault
    assert run_job(s3_config, ledger_id) == "skipped"  # not due before the server's time


def test_an_unreachable_endpoint_is_retried(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    chosen = config.replace(
        s3_env=s3_env(s3, FALBACK_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}", FALBACK_S3_MAX_ATTEMPTS="1")
    )
    ledger_id = one_file(chosen, conn, cdn, redis, 10_000)
    assert run_job(chosen, ledger_id) != "done"
    row = s3_row(conn)
    assert row["status"] == "retrying" and f"no answer from http://127.0.0.1:{port}" in row["last_error"]


def test_a_key_that_may_list_but_not_read_is_told_so(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    """HEAD answers carry no error code; a listing tells why it was refused, or that
    listing is allowed and reading is not."""
    ledger_id = one_file(s3_config, conn, cdn, redis, 10_000)
    s3.proxy.add(Fault("HeadObject", "status", status=403, code="AccessDenied", times=5))
    assert run_job(s3_config, ledger_id) == "failed"
    row = s3_row(conn)
    assert "may list bucket fal-backups but not read" in row["last_error"]
    assert "s3:GetObject" in row["last_error"] and s3.proxy.ops()["ListObjects"] == 1

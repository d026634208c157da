"""Resuming a multipart upload after an attempt that ended mid-way: the parts S3 holds are
not sent again; an upload that cannot be resumed is aborted and started over. (A worker
killed with SIGKILL is in test_s3_crash.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.destinations.s3_upload import resumable_parts
from tests.fakes.cdn import FakeCdn
from tests.fakes.s3_server import Fault
from tests.support.s3 import PART, Bucket, assert_one_verified_object, one_file, run_job, s3_row

SIZE = 4 * PART + 1234  # five parts, the last one short


def fail_part_3(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, how: Fault
) -> dict[str, Any]:
    """The first attempt stores parts 1 and 2, then part 3 fails as `how` says."""
    ledger_id = one_file(s3_config, conn, cdn, redis, SIZE)
    s3.proxy.add(how)
    assert run_job(s3_config, ledger_id) != "done"
    row = s3_row(conn)
    assert row["status"] == "retrying" and row["upload_id"] and row["part_size"] == PART
    assert s3.proxy.parts_stored() == [1, 2]
    return row


@pytest.mark.parametrize(
    "how",
    [
        Fault("UploadPart", "status", part=3, status=500, code="InternalError", times=2),
        # A body damaged on the way: its checksum no longer matches, and S3 refuses it.
        Fault("UploadPart", "corrupt", part=3),
    ],
    ids=["5xx", "corrupted"],
)
def test_an_attempt_that_failed_mid_way_resumes_after_the_stored_parts(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, how: Fault
) -> None:
    failed = fail_part_3(s3_config, conn, cdn, redis, s3, how)
    assert ("InternalError" if how.action == "status" else "BadDigest") in failed["last_error"]
    assert run_job(s3_config, failed["id"]) == "done"
    row = s3_row(conn)
    assert_one_verified_object(s3, cdn, row)
    assert row["attempts"] == 2
    # Each part stored once, in order; one upload, listed once to resume it.
    assert s3.proxy.parts_stored() == [1, 2, 3, 4, 5]
    ops = s3.proxy.ops()
    assert (ops["CreateMultipartUpload"], ops["ListParts"], ops["CompleteMultipartUpload"]) == (1, 1, 1)
    assert "AbortMultipartUpload" not in ops
    # The source is read from byte 0 again: the first 2 parts only to hash them.
    assert cdn.file(row["source_url"]).requests == ["", ""]


def test_an_upload_that_is_gone_starts_over(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    failed = fail_part_3(
        s3_config,
        conn,
        cdn,
        redis,
        s3,
        Fault("UploadPart", "status", part=3, status=503, code="SlowDown", times=2),
    )
    # Aborted meanwhile (by hand, or by the bucket's lifecycle rule).
    s3.admin.abort_multipart_upload(Bucket=s3.name, Key=failed["key"], UploadId=failed["upload_id"])
    s3.proxy.clear()
    assert run_job(s3_config, failed["id"]) == "done"
    assert_one_verified_object(s3, cdn, s3_row(conn))
    assert s3.proxy.parts_stored() == [1, 2, 3, 4, 5]
    assert s3.proxy.ops()["CreateMultipartUpload"] == 1


def test_parts_that_do_not_fit_are_aborted_and_the_file_sent_again(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    failed = fail_part_3(
        s3_config,
        conn,
        cdn,
        redis,
        s3,
        Fault("UploadPart", "status", part=3, status=500, code="InternalError", times=2),
    )
    with conn.cursor() as cur:  # the state says 6 MiB parts; S3 holds 5 MiB ones
        cur.execute("UPDATE s3_uploads SET part_size = %s", (PART + 1024 * 1024,))
    conn.commit()
    s3.proxy.clear()
    assert run_job(s3_config, failed["id"]) == "done"
    row = s3_row(conn)
    assert_one_verified_object(s3, cdn, row)  # and no upload left behind
    ops = s3.proxy.ops()
    assert (ops["ListParts"], ops["AbortMultipartUpload"], ops["CreateMultipartUpload"]) == (1, 1, 1)
    assert row["upload_id"] is None and row["part_size"] is None


def test_a_permanent_failure_aborts_the_upload(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    ledger_id = one_file(s3_config, conn, cdn, redis, SIZE)
    s3.proxy.add(Fault("UploadPart", "status", part=2, status=403, code="AccessDenied", times=5))
    assert run_job(s3_config, ledger_id) == "failed"
    row = s3_row(conn)
    assert "AccessDenied" in row["last_error"] and "s3:PutObject" in row["last_error"]
    assert s3.proxy.ops()["AbortMultipartUpload"] == 1
    assert s3.uploads() == [] and row["upload_id"] is None


def part(number: int, size: int | None = PART, **checksum: str) -> dict[str, Any]:
    listed: dict[str, Any] = {"PartNumber": number, "ETag": f'"e{number}"', **checksum}
    if size is not None:
        listed["Size"] = size
    return listed


@pytest.mark.parametrize(
    ("listed", "sent_size", "expected"),
    [
        ([], None, ([], 0)),
        ([part(2), part(1)], None, ([1, 2], 2 * PART)),  # in any order
        ([part(1), part(3)], None, ([1], PART)),  # after a gap, parts are sent again
        ([part(1, None), part(2, None)], None, ([1, 2], 2 * PART)),  # Supabase lists no sizes
        ([part(1), part(2, 7)], 2 * PART, None),  # a short part that is not the last
        ([part(1), part(2, 7)], None, None),  # a short last part nobody recorded sending
        ([part(1), part(2, 7)], PART + 7, ([1, 2], PART + 7)),  # everything: only Complete is left
        ([part(1, None), part(2, None)], PART + 7, ([1, 2], PART + 7)),
        ([part(1), part(2, 7), part(3)], PART + 7, None),  # a part past the end
        ([part(1, PART + 1)], None, None),  # another part size
    ],
)
def test_which_parts_an_upload_resumes_with(
    listed: list[dict[str, Any]], sent_size: int | None, expected: tuple[list[int], int] | None
) -> None:
    result = resumable_parts(listed, PART, sent_size)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert ([p["PartNumber"] for p in result[0]], result[1]) == expected


def test_resumed_parts_keep_their_checksums_for_complete() -> None:
    result = resumable_parts([part(1, ChecksumSHA256="abc=")], PART, None)
    assert result == ([{"PartNumber": 1, "ETag": '"e1"', "ChecksumSHA256": "abc="}], PART)

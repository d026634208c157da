"""The S3 destination against moto's S3 server over HTTP: every size class, one object per
ledger row under repeats, resume after an abandoned attempt with no part sent twice,
objects that are not what was sent, and errors in plain words without secrets.

Jobs run in-process (`backup_file`, the worker's function); a real worker killed with
SIGKILL, and memory for a large file, are in test_s3_crash.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests
from redis import Redis

from core.config import Config
from db import attempts, ledger
from db.connection import Connection
from jobs.destinations import from_config
from jobs.destinations import s3 as s3_module
from jobs.destinations.s3 import S3Destination
from jobs.fetch import SourceFetcher
from jobs.transfer import copy_file
from tests.fakes.cdn import FakeCdn
from tests.fakes.s3_server import Fault
from tests.support.drive import write_key_file
from tests.support.rows import ledger_rows
from tests.support.s3 import (
    PART,
    SECRET,
    Bucket,
    assert_one_verified_object,
    one_file,
    parts_of,
    run_job,
    s3_env,
    s3_row,
)


@pytest.mark.parametrize(
    ("size", "multipart"),
    [
        (0, False),
        (20_000, False),
        (PART, False),  # exactly one part: still one PutObject
        (3 * PART, True),  # an exact multiple: the last part waits for finish
        (3 * PART + 1, True),
        (2 * PART + 7, True),  # the source sends no Content-Length
    ],
)
def test_every_size_lands_verified(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, size: int, multipart: bool
) -> None:
    ledger_id = one_file(s3_config, conn, cdn, redis, size, send_length=size != 2 * PART + 7)
    assert run_job(s3_config, ledger_id) == "done"
    row = s3_row(conn)
    assert_one_verified_object(s3, cdn, row)
    assert row["destination_id"].startswith("falback/regular/") and row["destination_id"].endswith(
        f"/{ledger_id}-video-1.mp4"
    )
    ops = s3.proxy.ops()
    if multipart:
        assert s3.proxy.parts_stored() == list(range(1, parts_of(size) + 1))
        assert ops["CreateMultipartUpload"] == ops["CompleteMultipartUpload"] == ops["CopyObject"] == 1
        assert "PutObject" not in ops
    else:
        assert ops["PutObject"] == 1 and "CreateMultipartUpload" not in ops and "UploadPart" not in ops
    # Every body carried a checksum the server can check.
    assert {s.checksum for s in s3.proxy.seen if s.op in ("PutObject", "UploadPart")} == {
        "x-amz-checksum-sha256"
    }
    assert (row["upload_id"], row["sent_size"], row["sent_md5"]) == (None, size, row["md5"])


def test_a_second_attempt_finds_the_object_and_uploads_nothing(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    ledger_id = one_file(s3_config, conn, cdn, redis, 2 * PART + 10)
    row = attempts.claim(conn, ledger_id, "worker-a", 600)
    conn.commit()
    assert row is not None
    destination = from_config(s3_config, conn)
    assert isinstance(destination, S3Destination)
    first = copy_file(row, SourceFetcher(s3_config), destination)
    s3.proxy.clear()
    again = copy_file(row, SourceFetcher(s3_config), S3Destination(s3_config.s3, conn))  # type: ignore[arg-type]
    assert again == first
    assert s3.proxy.ops() == {"HeadObject": 1}
    assert cdn.file(row.source_url).requests == [""]  # the source was not read again
    assert list(s3.objects()) == [first.id]
    assert SECRET not in repr(s3_config)


def key_of(config: Config, conn: Connection, ledger_id: int) -> str:
    [record] = [r for r in ledger_rows(conn) if r["id"] == ledger_id]
    assert config.s3 is not None
    return S3Destination(config.s3, conn, s3=object()).key_for(ledger.LedgerRow.from_record(record))


@pytest.mark.parametrize("found", ["foreign", "wrong size", "wrong md5"])
def test_an_object_that_is_not_the_copy_is_replaced(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, found: str
) -> None:
    size = PART + 100
    ledger_id = one_file(s3_config, conn, cdn, redis, size)
    key = key_of(s3_config, conn, ledger_id)
    source = cdn.file(ledger_rows(conn)[0]["source_url"])
    if found == "foreign":  # someone's own upload at the key: no metadata
        s3.put(key, b"a different file")
    elif found == "wrong size":  # the right metadata on a short body
        s3.put(key, b"x" * 100, md5=source.md5(), size=str(size))
    else:  # not what falback sent: the md5 recorded before the last bytes went out differs
        s3.put(key, b"y" * size, md5="0" * 32, size=str(size))
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO s3_uploads (ledger_id, bucket, key, sent_size, sent_md5)"
                " VALUES (%s, %s, %s, %s, %s)",
                (ledger_id, s3.name, key, size, source.md5()),
            )
        conn.commit()
    assert run_job(s3_config, ledger_id) == "done"
    assert_one_verified_object(s3, cdn, s3_row(conn))
    assert s3.proxy.ops()["DeleteObject"] == 1


def test_a_completed_upload_whose_metadata_was_not_written_is_labelled_not_sent_again(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    ledger_id = one_file(s3_config, conn, cdn, redis, 2 * PART + 1)
    s3.proxy.add(Fault("CopyObject", "status", status=500, code="InternalError", times=2))
    assert run_job(s3_config, ledger_id) != "done"
    unlabelled = s3_row(conn)
    assert unlabelled["status"] == "retrying" and "InternalError" in unlabelled["last_error"]
    key = unlabelled["key"]
    assert s3.head(key)["Metadata"].get("md5") is None and unlabelled["sent_md5"] is not None
    s3.proxy.clear()
    assert run_job(s3_config, ledger_id) == "done"
    assert_one_verified_object(s3, cdn, s3_row(conn))
    ops = s3.proxy.ops()
    assert ops["CopyObject"] == 1 and not {"PutObject", "UploadPart", "CreateMultipartUpload"} & set(ops)


@pytest.mark.parametrize("checksum", ["crc32", "md5"])
def test_other_checksums_for_stores_that_want_them(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, checksum: str
) -> None:
    chosen = config.replace(s3_env=s3_env(s3, FALBACK_S3_CHECKSUM=checksum))
    ledger_id = one_file(chosen, conn, cdn, redis, 2 * PART + 1, send_length=False)
    assert run_job(chosen, ledger_id) == "done"
    assert_one_verified_object(s3, cdn, s3_row(conn))
    header = {"crc32": "x-amz-checksum-crc32", "md5": "content-md5"}[checksum]
    assert {s.checksum for s in s3.proxy.seen if s.op == "UploadPart"} == {header}
    assert s3.proxy.parts_stored() == [1, 2, 3]


def test_a_large_object_is_labelled_part_by_part(
    s3_config: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    s3: Bucket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CopyObject stops at 5 GiB; above that the metadata is written by a multipart copy
    (here with the limit lowered so a few MiB take that path)."""
    monkeypatch.setattr(s3_module, "COPY_LIMIT", PART)
    monkeypatch.setattr(s3_module, "COPY_PART", PART)
    ledger_id = one_file(s3_config, conn, cdn, redis, 3 * PART + 1)
    assert run_job(s3_config, ledger_id) == "done"
    assert_one_verified_object(s3, cdn, s3_row(conn))
    ops = s3.proxy.ops()
    assert ops["UploadPartCopy"] == 4 and ops["CreateMultipartUpload"] == 2 and "CopyObject" not in ops


def test_a_presigned_url_serves_the_object(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    ledger_id = one_file(s3_config, conn, cdn, redis, 30_000)
    assert run_job(s3_config, ledger_id) == "done"
    row = s3_row(conn)
    assert s3_config.s3 is not None
    url = S3Destination(s3_config.s3, conn).presigned_url(row["destination_id"], 60)
    assert "X-Amz-Expires=60" in url and SECRET not in url
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200
    assert hashlib.md5(answer.content, usedforsecurity=False).hexdigest() == row["md5"]


def test_s3_is_the_destination_only_when_drive_is_not_configured(
    s3_config: Config, conn: Connection, tmp_path: Path
) -> None:
    assert from_config(s3_config, conn).name == "s3"
    both = s3_config.replace(google={"GOOGLE_DRIVE_KEY_FILE": str(write_key_file(tmp_path / "k.json"))})
    assert both.drive is not None and both.s3 is not None
    assert from_config(both, conn).name == "drive"
    assert from_config(s3_config.replace(s3_env={}), conn).name == "local"

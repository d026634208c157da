"""Queries for the S3 destination's state (migrations/0007_s3_uploads.sql).

Every write names the row's claim owner and changes nothing once another worker holds
the row (a worker whose lease ran out must not steer the new owner's upload). Nothing is
committed here; the caller commits at once, because the job's connection is rolled back
when an attempt fails.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.connection import Connection, fetch_one

_OWNED = "EXISTS (SELECT 1 FROM ledger WHERE id = %(id)s AND status = 'copying' AND claimed_by = %(owner)s)"


@dataclass(frozen=True)
class S3Upload:
    bucket: str
    key: str
    upload_id: str | None  # a multipart upload in progress
    part_size: int | None
    sent_size: int | None  # the whole file as streamed, recorded before its last bytes
    sent_md5: str | None


def upload(conn: Connection, ledger_id: int) -> S3Upload | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT bucket, key, upload_id, part_size, sent_size, sent_md5"
            " FROM s3_uploads WHERE ledger_id = %s",
            (ledger_id,),
        )
        row = fetch_one(cur)
    return S3Upload(**row) if row else None


def start_upload(
    conn: Connection, ledger_id: int, owner: str, bucket: str, key: str, upload_id: str, part_size: int
) -> bool:
    """Keep a new multipart upload (forgetting what an earlier one sent); False if the
    claim is no longer `owner`'s."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO s3_uploads (ledger_id, bucket, key, upload_id, part_size)"
            " SELECT %(id)s, %(bucket)s, %(key)s, %(upload_id)s, %(part_size)s"
            f" WHERE {_OWNED}"
            " ON CONFLICT (ledger_id) DO UPDATE SET bucket = excluded.bucket, key = excluded.key,"
            " upload_id = excluded.upload_id, part_size = excluded.part_size, sent_size = NULL,"
            " sent_md5 = NULL, updated_at = now()",
            {
                "id": ledger_id,
                "owner": owner,
                "bucket": bucket,
                "key": key,
                "upload_id": upload_id,
                "part_size": part_size,
            },
        )
        return bool(cur.rowcount)


def record_sent(
    conn: Connection, ledger_id: int, owner: str, bucket: str, key: str, size: int, md5: str
) -> bool:
    """The whole file's size and MD5, just before its last bytes go out (a multipart
    upload keeps its upload id and part size)."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO s3_uploads (ledger_id, bucket, key, sent_size, sent_md5)"
            " SELECT %(id)s, %(bucket)s, %(key)s, %(size)s, %(md5)s"
            f" WHERE {_OWNED}"
            " ON CONFLICT (ledger_id) DO UPDATE SET bucket = excluded.bucket, key = excluded.key,"
            " sent_size = excluded.sent_size, sent_md5 = excluded.sent_md5, updated_at = now()",
            {"id": ledger_id, "owner": owner, "bucket": bucket, "key": key, "size": size, "md5": md5},
        )
        return bool(cur.rowcount)


def end_upload(conn: Connection, ledger_id: int, owner: str) -> None:
    """The multipart upload is completed or aborted: nothing is left to resume."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE s3_uploads SET upload_id = NULL, part_size = NULL, updated_at = now()"
            f" WHERE ledger_id = %(id)s AND {_OWNED}",
            {"id": ledger_id, "owner": owner},
        )


def forget(conn: Connection, ledger_id: int, owner: str) -> None:
    """The object (or upload) was discarded: the next attempt starts from nothing."""
    with conn.cursor() as cur:
        cur.execute(
            f"DELETE FROM s3_uploads WHERE ledger_id = %(id)s AND {_OWNED}", {"id": ledger_id, "owner": owner}
        )

"""Named queries on webhook_blobs: the bytes of files fal returned inline (data: URIs),
kept until copied (migrations/0003_webhooks.sql)."""

from __future__ import annotations

import psycopg2

from db.connection import Connection, fetch_one


def insert_blob(conn: Connection, sha256: str, content_type: str | None, data: bytes) -> None:
    """Keep a data: URI's bytes; identical content is stored once, and not again once its
    copy is done (the blob was deleted then, and the ledger row will not copy it twice)."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO webhook_blobs (sha256, content_type, size, data)"
            " SELECT %(sha)s, %(type)s, %(size)s, %(data)s WHERE NOT EXISTS ("
            "   SELECT 1 FROM ledger WHERE source_url = 'blob:sha256:' || %(sha)s AND status = 'done')"
            " ON CONFLICT (sha256) DO NOTHING",
            {"sha": sha256, "type": content_type, "size": len(data), "data": psycopg2.Binary(data)},
        )


def blob_size(conn: Connection, sha256: str) -> int | None:
    with conn.cursor() as cur:
        cur.execute("SELECT size FROM webhook_blobs WHERE sha256 = %s", (sha256,))
        row = fetch_one(cur)
    return int(row["size"]) if row else None


def blob_slice(conn: Connection, sha256: str, start: int, length: int) -> bytes:
    """`length` bytes from byte `start` (0-based); fewer at the end of the blob."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT substring(data FROM %s FOR %s) AS part FROM webhook_blobs WHERE sha256 = %s",
            (start + 1, length, sha256),
        )
        row = fetch_one(cur)
    return bytes(row["part"]) if row else b""


def delete_blob(conn: Connection, sha256: str) -> None:
    """Drop a stored inline file once its copy is recorded (one ledger row per blob URL)."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM webhook_blobs WHERE sha256 = %s", (sha256,))

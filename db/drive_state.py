"""Queries for destination state (migrations/0004_drive.sql): Drive file reservations,
the Drive folder cache, and destination pauses.

Every function commits nothing; the caller commits at once, because the job's
connection is rolled back when an attempt fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from db.connection import Connection, fetch_one

_FOLDER_LOCK = 7_246_002  # advisory-lock namespace for folder creation (7_246_001: migrations)


@dataclass(frozen=True)
class Reservation:
    file_id: str
    sent_size: int | None
    sent_md5: str | None
    # The resumable upload session and the offset Drive confirmed, for resuming after a crash.
    session_uri: str | None = None
    session_offset: int | None = None


def reservation(conn: Connection, ledger_id: int) -> Reservation | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT file_id, sent_size, sent_md5, session_uri, session_offset"
            " FROM drive_files WHERE ledger_id = %s",
            (ledger_id,),
        )
        row = fetch_one(cur)
    return Reservation(**row) if row else None


def reserve(conn: Connection, ledger_id: int, file_id: str) -> str:
    """Reserve `file_id` for the row unless one is reserved already; return the one that holds."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO drive_files (ledger_id, file_id) VALUES (%s, %s) ON CONFLICT (ledger_id) DO NOTHING",
            (ledger_id, file_id),
        )
        cur.execute("SELECT file_id FROM drive_files WHERE ledger_id = %s", (ledger_id,))
        row = fetch_one(cur)
    assert row is not None
    return str(row["file_id"])


def record_sent(conn: Connection, ledger_id: int, file_id: str, size: int, md5: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE drive_files SET sent_size = %s, sent_md5 = %s, updated_at = now()"
            " WHERE ledger_id = %s AND file_id = %s",
            (size, md5, ledger_id, file_id),
        )


def save_session(conn: Connection, ledger_id: int, owner: str, session_uri: str | None, offset: int) -> None:
    """Keep the upload session and confirmed offset, while `owner` still holds the row's
    claim (a worker whose lease ran out changes nothing)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE drive_files SET session_uri = %s, session_offset = %s, updated_at = now()"
            " WHERE ledger_id = %s AND EXISTS (SELECT 1 FROM ledger WHERE id = %s"
            " AND status = 'copying' AND claimed_by = %s)",
            (session_uri, offset, ledger_id, ledger_id, owner),
        )


def release(conn: Connection, ledger_id: int, file_id: str) -> None:
    """Forget a reservation whose file was deleted (a bad copy), with its upload session:
    the next attempt reserves a new id and starts a new session."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM drive_files WHERE ledger_id = %s AND file_id = %s", (ledger_id, file_id))


def cached_folder(conn: Connection, parent_id: str, name: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT folder_id FROM drive_folders WHERE parent_id = %s AND name = %s", (parent_id, name)
        )
        row = fetch_one(cur)
    return str(row["folder_id"]) if row else None


def lock_folder(conn: Connection, parent_id: str, name: str) -> None:
    """Serialise the creation of one folder across workers, until the transaction ends."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_FOLDER_LOCK, f"{parent_id}/{name}"))


def remember_folder(conn: Connection, parent_id: str, name: str, folder_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO drive_folders (parent_id, name, folder_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (parent_id, name) DO UPDATE SET folder_id = excluded.folder_id",
            (parent_id, name, folder_id),
        )


def forget_folders(conn: Connection, folder_ids: list[str]) -> None:
    """Drop cached folders that Drive no longer has (someone deleted them)."""
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM drive_folders WHERE folder_id = ANY(%s) OR parent_id = ANY(%s)",
            (folder_ids, folder_ids),
        )


def paused_until(conn: Connection, destination: str) -> datetime | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT paused_until FROM destination_pauses WHERE destination = %s AND paused_until > now()",
            (destination,),
        )
        row = fetch_one(cur)
    return row["paused_until"] if row else None


def pause(conn: Connection, destination: str, until: datetime, reason: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO destination_pauses (destination, paused_until, reason) VALUES (%s, %s, %s)"
            " ON CONFLICT (destination) DO UPDATE SET paused_until = excluded.paused_until,"
            " reason = excluded.reason, updated_at = now()",
            (destination, until, reason),
        )


def resume(conn: Connection, destination: str) -> int | None:
    """End the destination's pause and make every row it held back due now (the sweep
    re-queues due rows); return how many 'retrying' rows that was (None: no pause)."""
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM destination_pauses WHERE destination = %s RETURNING paused_until", (destination,)
        )
        row = fetch_one(cur)
        if row is None:
            return None
        cur.execute(
            "UPDATE ledger SET next_attempt_at = now(), updated_at = now()"
            " WHERE status = 'retrying' AND next_attempt_at > now()"
            " AND next_attempt_at <= %s",
            (row["paused_until"],),
        )
        return int(cur.rowcount)


def pause_reason(conn: Connection, destination: str) -> tuple[datetime, str] | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT paused_until, reason FROM destination_pauses"
            " WHERE destination = %s AND paused_until > now()",
            (destination,),
        )
        row = fetch_one(cur)
    return (row["paused_until"], str(row["reason"])) if row else None

"""Queries for the signed-in Google account (migrations/0009_drive_oauth.sql).

Tokens arrive and leave here encrypted (Fernet ciphertext); this module never sees them
in the clear. Functions commit nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from db import app_rows
from db.connection import Connection, fetch_one


@dataclass(frozen=True)
class SignIn:
    client_id: str
    account_email: str | None
    scope: str
    refresh_token: str = field(repr=False)  # ciphertext
    access_token: str | None = field(repr=False)  # ciphertext
    access_expires_at: datetime | None
    refreshes: int
    signed_in_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None


_COLUMNS = (
    "client_id, account_email, scope, refresh_token, access_token, access_expires_at,"
    " refreshes, signed_in_at, revoked_at, revoked_reason"
)


def current(conn: Connection, *, lock: bool = False) -> SignIn | None:
    """The sign-in; with `lock`, held FOR UPDATE until the transaction ends."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM drive_oauth WHERE id = 1{' FOR UPDATE' if lock else ''}")
        row = fetch_one(cur)
    return SignIn(**row) if row else None


def save_login(
    conn: Connection,
    client_id: str,
    email: str | None,
    scope: str,
    refresh_token: str,
    access_token: str,
    expires_at: datetime,
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO drive_oauth (id, client_id, account_email, scope, refresh_token,"
            " access_token, access_expires_at) VALUES (1, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET client_id = excluded.client_id,"
            " account_email = excluded.account_email, scope = excluded.scope,"
            " refresh_token = excluded.refresh_token, access_token = excluded.access_token,"
            " access_expires_at = excluded.access_expires_at, refreshes = 0,"
            " signed_in_at = now(), revoked_at = NULL, revoked_reason = NULL, updated_at = now()",
            (client_id, email, scope, refresh_token, access_token, expires_at),
        )


def save_refresh(
    conn: Connection, access_token: str, expires_at: datetime, refresh_token: str | None
) -> None:
    """A new access token (and, if Google rotated it, a new refresh token)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE drive_oauth SET access_token = %s, access_expires_at = %s,"
            " refresh_token = coalesce(%s, refresh_token), refreshes = refreshes + 1,"
            " updated_at = now() WHERE id = 1",
            (access_token, expires_at, refresh_token),
        )


def mark_revoked(conn: Connection, reason: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE drive_oauth SET revoked_at = now(), revoked_reason = %s,"
            " access_token = NULL, access_expires_at = NULL, updated_at = now()"
            " WHERE id = 1 AND revoked_at IS NULL",
            (reason,),
        )


def forget_folders(conn: Connection) -> None:
    """A new sign-in may be another account: the folder ids cached for the last are void."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM drive_folders")


def backlog(conn: Connection) -> tuple[int, int]:
    """Bytes (as far as known) and files still to back up: the ledger's unfinished rows
    and the app's files that have no ledger row yet."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(coalesce(size_bytes, expected_size, 0)), 0) AS bytes,"
            " count(*) AS files FROM ledger"
            " WHERE status IN ('pending', 'queued', 'retrying', 'copying')"
        )
        row = fetch_one(cur)
    assert row is not None
    unseen = app_rows.not_in_ledger(conn)
    return (
        int(row["bytes"]) + sum(int(k["bytes"]) for k in unseen),
        int(row["files"]) + sum(int(k["files"]) for k in unseen),
    )

"""The app tables' side of the ledger: ledger rows made from app rows, and the app rows'
backup_* columns kept in step with their files' ledger rows.

The app tables (gen_videos, gen_images) are the user's; falback reads them through the
views and functions of migrations/repeatable/compat.sql and writes only the backup_*
columns that compat step added.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from core.kinds import APP_TABLES, priority_sql
from db.connection import Connection, Row, fetch_all, fetch_one
from db.ledger import NEW_FILE_INSERT, PRIORITY_ORDER, NewFile

# An app row's primary key as text: integers, uuids and short text ids (nanoid, cuid) all
# fit. An id of the wrong type for its table simply matches no row.
APP_ROW_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def app_files_exist(conn: Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.falback_app_files') IS NOT NULL AS present")
        row = fetch_one(cur)
        return bool(row and row["present"])


# Ledger rows from app files `f` (falback_app_files or falback_app_row_files).
_INSERT_APP_FILES = """
    INSERT INTO ledger (source_url, kind, source_table, source_id, variant,
                        expected_size, source_created_at, expires_at)
    SELECT f.url, f.kind, f.source_table, f.source_id, f.variant, f.size,
           f.created_at, f.created_at + make_interval(days => %(days)s)
"""


def insert_from_app(conn: Connection, kinds: Sequence[str], limit: int, expiry_days: int) -> list[Row]:
    """Create ledger rows for app files that have none, most valuable and oldest first;
    return the id and kind of the rows created (a row a concurrent relay or webhook
    created first is not among them)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            {_INSERT_APP_FILES}
            FROM falback_app_files f
            WHERE f.kind = ANY(%(kinds)s)
              AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.source_url = f.url)
            ORDER BY {PRIORITY_ORDER}, f.created_at, f.source_id
            LIMIT %(limit)s
            ON CONFLICT (source_url) DO NOTHING
            RETURNING id, kind
            """,
            {"kinds": list(kinds), "limit": limit, "days": expiry_days},
        )
        return fetch_all(cur)


# A URL already in the ledger (a webhook reported it before the app row existed) is linked
# to its app row; an unlinked row's kind was a guess, so the app row's variant wins, as
# long as no attempt has started (the destination's path depends on the kind).
_LINK_ON_CONFLICT = """
    ON CONFLICT (source_url) DO UPDATE
    SET source_table = coalesce(ledger.source_table, excluded.source_table),
        kind = CASE WHEN ledger.source_table IS NULL AND ledger.status IN ('pending', 'queued')
                    THEN excluded.kind ELSE ledger.kind END,
        source_id = coalesce(ledger.source_id, excluded.source_id),
        variant = coalesce(ledger.variant, excluded.variant),
        expected_size = coalesce(ledger.expected_size, excluded.expected_size),
        source_created_at = coalesce(ledger.source_created_at, excluded.source_created_at),
        expires_at = least(ledger.expires_at, excluded.expires_at),
        updated_at = now()
"""


def upsert_app_row(conn: Connection, source_table: str, source_id: str, expiry_days: int) -> list[Row]:
    """Create (or link) the ledger rows for one app row's files; return their id, kind, status.

    A row a webhook created before the app row existed gets its link here.
    """
    with conn.cursor() as cur:
        cur.execute(
            f"""
            {_INSERT_APP_FILES}
            FROM falback_app_row_files(%(table)s, %(id)s) f
            {_LINK_ON_CONFLICT}
            RETURNING id, kind, status, expected_size
            """,
            {"table": source_table, "id": source_id, "days": expiry_days},
        )
        return fetch_all(cur)


def link_files(conn: Connection, files: Sequence[NewFile], expiry_days: int) -> list[Row]:
    """Create, or link to their app row, ledger rows for an app row's files (as
    `upsert_app_row` does, for a row this connection cannot see yet); return id, kind, status."""
    rows: list[Row] = []
    with conn.cursor() as cur:
        for f in files:
            cur.execute(
                NEW_FILE_INSERT + _LINK_ON_CONFLICT + "RETURNING id, kind, status",
                {**f.__dict__, "days": expiry_days},
            )
            rows.extend(fetch_all(cur))
    return rows


def sync_app_row(conn: Connection, source_table: str | None, source_id: str | None) -> None:
    """Keep the app row's backup_* columns in step with its files' ledger rows.

    backup_status sums up every file of the row (failed > in_progress > gone > completed;
    pending while nothing has started); the URLs point at the copy of the row's main file
    (the upscaled video when there is one): Drive copies in backup_drive_url, copies
    elsewhere in backup_storage_url.
    """
    # The app tables may live in another database (rows linked by webhooks only).
    if source_table not in APP_TABLES or source_id is None or not app_files_exist(conn):
        return
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT f.variant, l.status, l.destination, l.destination_url, l.done_at, l.last_error
            FROM falback_app_row_files(%s, %s) f LEFT JOIN ledger l ON l.source_url = f.url
            ORDER BY {priority_sql("f.kind")}
            """,
            (source_table, source_id),
        )
        files = fetch_all(cur)
        if not files:
            return
        statuses = [f["status"] for f in files]
        main = files[0]
        if "failed" in statuses:
            status = "failed"
        elif all(s in (None, "pending") for s in statuses):
            status = "pending"
        elif any(s not in ("done", "gone") for s in statuses):
            status = "in_progress"
        elif "gone" in statuses:
            status = "gone"
        else:
            status = "completed"
        errors = [f"{f['variant']}: {f['last_error']}" for f in files if f["status"] in ("failed", "gone")]
        done = main["status"] == "done"
        cur.execute(
            sql.SQL(
                "UPDATE {} SET backup_status = %s, backup_drive_url = %s, backup_storage_url = %s,"
                " backed_up_at = %s, backup_error = %s WHERE id = %s"
            ).format(sql.Identifier(source_table)),
            (
                status,
                main["destination_url"] if done and main["destination"] == "drive" else None,
                main["destination_url"] if done and main["destination"] != "drive" else None,
                max((f["done_at"] for f in files if f["done_at"]), default=None),
                "; ".join(errors) or None,
                source_id,
            ),
        )


def not_in_ledger(conn: Connection) -> list[dict[str, Any]]:
    """App files with no ledger row yet, per kind (counted as not started)."""
    if not app_files_exist(conn):
        return []
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT f.kind, count(*) AS files, coalesce(sum(f.size), 0)::bigint AS bytes
            FROM falback_app_files f
            WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.source_url = f.url)
            GROUP BY f.kind
            """
        )
        return [dict(r) for r in fetch_all(cur)]

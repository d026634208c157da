"""The app tables' side of the ledger: ledger rows made from app rows, and linked to them.

The app tables (gen_videos, gen_images) are the user's; falback reads them through the
views and functions of migrations/repeatable/compat.sql (db/app_sync.py's bulk update
alone reads their file columns directly, as core.kinds names them) and writes only the
backup_* columns that compat step added.

Every function here that creates or links ledger rows for app rows also recomputes those
rows' backup_* columns (db/app_sync.py): a file linked after it was copied (the app wrote
its URL after fal's webhook) gets no job, so nothing else would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import psycopg2.extensions

from core.kinds import KIND_NAMES, priority_sql
from core.media_links import public_url_from_env
from db import app_sync
from db.connection import Connection, Row, fetch_all
from db.ledger import NEW_FILE_INSERT, PRIORITY_ORDER, NewFile

# An app row's primary key as text: integers, uuids and short text ids (nanoid, cuid) all
# fit. An id of the wrong type for its table simply matches no row.
APP_ROW_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


# Ledger rows from app files `f` (falback_app_files or falback_app_row_files).
_INSERT_APP_FILES = """
    INSERT INTO ledger (source_url, kind, source_table, source_id, variant,
                        expected_size, source_created_at, expires_at)
    SELECT f.url, f.kind, f.source_table, f.source_id, f.variant, f.size,
           f.created_at, f.created_at + make_interval(days => %(days)s)
"""


# The statement at the heart of a backfill (bench/backfill.py times it alone).
BARE_INSERT_FROM_APP = f"""
    {_INSERT_APP_FILES}
    FROM falback_app_files f
    WHERE f.kind = ANY(%(kinds)s)
      AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.source_url = f.url)
    ORDER BY {PRIORITY_ORDER}, f.created_at, f.source_id
    LIMIT %(limit)s
    ON CONFLICT (source_url) DO NOTHING
"""


def insert_from_app(conn: Connection, kinds: Sequence[str], limit: int, expiry_days: int) -> list[Row]:
    """Create ledger rows for app files that have none, most valuable and oldest first,
    and link unlinked ledger rows to the app files they turn out to be (a relay that was
    down missed the app's write); return the id and kind of the rows created (a row a
    concurrent relay or webhook created first is not among them), with the expected size.
    At most `limit` of each."""
    params = {"kinds": list(kinds), "limit": limit, "days": expiry_days}
    with conn.cursor() as cur:
        cur.execute(_LINK_UNLINKED, params)
        linked = fetch_all(cur)
    # Plain tuples for what may be a whole table's worth of rows: a dict cursor's rows cost
    # more to build than the INSERT takes.
    with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
        cur.execute(
            BARE_INSERT_FROM_APP + " RETURNING id, kind, expected_size, source_table, source_id", params
        )
        created = _dicts(cur)
    # The query above read falback_app_files: no need to ask whether it exists.
    app_sync.sync_known(conn, [(r["source_table"], r["source_id"]) for r in [*linked, *created]])
    return created


def backfill_from_app(
    conn: Connection, kinds: Sequence[str], limit: int, expiry_days: int
) -> dict[str, tuple[int, int]]:
    """`insert_from_app` for a backfill: the same ledger rows created, the same links and
    the same app rows brought up to date, but what comes back is the number and expected
    bytes of the rows created, per kind (most valuable first), rather than a row per file:
    the app rows to sync come out of the INSERT as one array per table."""
    params = {"kinds": list(kinds), "limit": limit, "days": expiry_days, "bulk": app_sync.BULK_ROWS}
    with conn.cursor() as cur:
        cur.execute(_LINK_UNLINKED, params)
        few = [(r["source_table"], r["source_id"]) for r in fetch_all(cur)]
    with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
        cur.execute(_CREATED_COUNTED, params)
        results = cur.fetchall()
    per_kind: dict[str, tuple[int, int]] = {}
    public_url = public_url_from_env()
    with conn.cursor() as cur:
        for kind, table, files, size, ids_literal, ids in results:
            if kind is not None:
                per_kind[kind] = (files, size)
            elif ids_literal is not None:
                app_sync.sync_bulk(cur, table, ids_literal, public_url)
            else:
                few.extend((table, row_id) for row_id in ids)
    app_sync.sync_known(conn, few)
    return dict(sorted(per_kind.items(), key=lambda item: KIND_NAMES.index(item[0])))


# The backfill's INSERT, its rows counted per kind and their app rows' ids gathered per
# table: as a text[] literal to pass straight back from `bulk` rows on, else as a list.
_CREATED_COUNTED = f"""
    WITH created AS ({BARE_INSERT_FROM_APP} RETURNING kind, expected_size, source_table, source_id)
    SELECT kind, NULL AS source_table, count(*) AS files,
           coalesce(sum(expected_size), 0)::bigint AS bytes, NULL::text AS ids_literal,
           NULL::text[] AS ids
    FROM created GROUP BY kind
    UNION ALL
    SELECT NULL, source_table, NULL, NULL,
           CASE WHEN count(DISTINCT source_id) >= %(bulk)s THEN array_agg(DISTINCT source_id)::text END,
           CASE WHEN count(DISTINCT source_id) < %(bulk)s THEN array_agg(DISTINCT source_id) END
    FROM created WHERE source_table IS NOT NULL GROUP BY source_table
"""


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


# The same link for ledger rows found by URL among all app files (the sweep's catch-up).
_LINK_UNLINKED = f"""
    UPDATE ledger
    SET source_table = f.source_table, source_id = f.source_id, variant = f.variant,
        kind = CASE WHEN ledger.status IN ('pending', 'queued') THEN f.kind ELSE ledger.kind END,
        expected_size = coalesce(ledger.expected_size, f.size),
        source_created_at = coalesce(ledger.source_created_at, f.created_at),
        expires_at = least(ledger.expires_at, f.created_at + make_interval(days => %(days)s)),
        updated_at = now()
    FROM (SELECT DISTINCT ON (f.url) f.*
          FROM falback_app_files f JOIN ledger l ON l.source_url = f.url
          WHERE l.source_table IS NULL AND f.kind = ANY(%(kinds)s)
          ORDER BY f.url, {priority_sql("f.kind")}
          LIMIT %(limit)s) f
    WHERE ledger.source_url = f.url AND ledger.source_table IS NULL
    RETURNING ledger.source_table, ledger.source_id
"""


def upsert_app_row(conn: Connection, source_table: str, source_id: str, expiry_days: int) -> list[Row]:
    """Create (or link) the ledger rows for one app row's files, and bring the row's
    backup_* columns up to date; return the files' id, kind, status.

    A row a webhook created before the app row existed gets its link here.
    """
    return upsert_app_rows(conn, [(source_table, source_id)], expiry_days)[0]


def upsert_app_rows(
    conn: Connection, app_rows: Sequence[tuple[str, str]], expiry_days: int
) -> list[list[Row]]:
    """`upsert_app_row` for each (table, id), the backup_* columns synced together."""
    found: list[list[Row]] = []
    with conn.cursor() as cur:
        for source_table, source_id in app_rows:
            cur.execute(
                f"""
                {_INSERT_APP_FILES}
                FROM falback_app_row_files(%(table)s, %(id)s) f
                {_LINK_ON_CONFLICT}
                RETURNING id, kind, status, expected_size
                """,
                {"table": source_table, "id": source_id, "days": expiry_days},
            )
            found.append(fetch_all(cur))
    # Rows that returned files come from falback_app_row_files: it exists.
    app_sync.sync_known(conn, [key for key, rows in zip(app_rows, found, strict=True) if rows])
    return found


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
    app_sync.sync_app_rows(conn, [(f.source_table, f.source_id) for f in files])
    return rows


def _dicts(cur: Any) -> list[Row]:
    names = [d.name for d in cur.description]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def not_in_ledger(conn: Connection) -> list[dict[str, Any]]:
    """App files with no ledger row yet, per kind (counted as not started)."""
    if not app_sync.app_files_exist(conn):
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

"""Named queries on the ledger. Every status change is a conditional UPDATE.

Status machine: pending -> queued -> copying -> done; copying -> retrying -> queued;
-> failed (gave up, or a permanent error); -> gone (the source answered 404/410).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from db.connection import Connection, Row, fetch_all, fetch_one

KINDS = ("upscale", "regular", "image")
# Which ledger kinds each backfill type covers (the user's HTTP call says "images").
BACKFILL_TYPES: dict[str, tuple[str, ...]] = {
    "upscale": ("upscale",),
    "regular": ("regular",),
    "images": ("image",),
    "all": KINDS,
}
APP_TABLES = ("gen_videos", "gen_images")
PRIORITY_ORDER = "CASE kind WHEN 'upscale' THEN 1 WHEN 'regular' THEN 2 ELSE 3 END"


@dataclass(frozen=True)
class LedgerRow:
    id: int
    source_url: str
    kind: str
    status: str
    attempts: int
    source_table: str | None
    source_id: str | None
    variant: str | None
    fal_request_id: str | None
    file_name: str | None
    content_type: str | None
    expected_size: int | None
    upload_session_uri: str | None
    upload_offset: int | None
    source_created_at: datetime | None
    claimed_by: str | None = None  # set by claim(): the owner every later write must name

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LedgerRow:
        return cls(**{f: record[f] for f in cls.__dataclass_fields__})


_ROW_COLUMNS = ", ".join(LedgerRow.__dataclass_fields__)


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


@dataclass(frozen=True)
class NewFile:
    """A file a webhook reported, before it has a ledger row."""

    source_url: str
    kind: str
    source_table: str | None = None
    source_id: str | None = None
    variant: str | None = None
    fal_request_id: str | None = None
    file_name: str | None = None
    content_type: str | None = None
    expected_size: int | None = None
    source_created_at: datetime | None = None  # None: now


_NEW_FILE_INSERT = """
    INSERT INTO ledger (source_url, kind, source_table, source_id, variant, fal_request_id,
                        file_name, content_type, expected_size, source_created_at, expires_at)
    SELECT %(source_url)s, %(kind)s, %(source_table)s, %(source_id)s, %(variant)s,
           %(fal_request_id)s, %(file_name)s, %(content_type)s, %(expected_size)s, c.at,
           c.at + make_interval(days => %(days)s)
    FROM (SELECT coalesce(%(source_created_at)s::timestamptz, now()) AS at) c
"""


def insert_files(conn: Connection, files: Sequence[NewFile], expiry_days: int) -> list[Row]:
    """Create ledger rows for new URLs (a URL already in the ledger is left as it is);
    return the id and kind of the rows created."""
    created: list[Row] = []
    with conn.cursor() as cur:
        for f in files:
            cur.execute(
                _NEW_FILE_INSERT + " ON CONFLICT (source_url) DO NOTHING RETURNING id, kind",
                {**f.__dict__, "days": expiry_days},
            )
            created.extend(fetch_all(cur))
    return created


def link_files(conn: Connection, files: Sequence[NewFile], expiry_days: int) -> list[Row]:
    """Create, or link to their app row, ledger rows for an app row's files (as
    `upsert_app_row` does, for a row this connection cannot see yet); return id, kind, status."""
    rows: list[Row] = []
    with conn.cursor() as cur:
        for f in files:
            cur.execute(
                _NEW_FILE_INSERT + _LINK_ON_CONFLICT + "RETURNING id, kind, status",
                {**f.__dict__, "days": expiry_days},
            )
            rows.extend(fetch_all(cur))
    return rows


def pending_rows(conn: Connection, kinds: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """Rows waiting for a job, highest priority first, closest to expiry first."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT id, kind, expected_size FROM ledger
            WHERE status = 'pending' AND kind = ANY(%(kinds)s)
            ORDER BY {PRIORITY_ORDER}, expires_at NULLS LAST, id
            LIMIT %(limit)s
            """,
            {"kinds": list(kinds), "limit": limit},
        )
        return list(fetch_all(cur))


def mark_queued(conn: Connection, ids: Sequence[int], from_status: str = "pending") -> int:
    """Rows that now have a job: 'pending' (or, for the sweep, due 'retrying') -> 'queued'."""
    assert from_status in ("pending", "retrying")
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ledger SET status = 'queued', queued_at = now(), updated_at = now()"
            " WHERE id = ANY(%s) AND status = %s",
            (list(ids), from_status),
        )
        return cur.rowcount


def claim(conn: Connection, ledger_id: int, worker: str, lease_seconds: int) -> LedgerRow | None:
    """Take the row for one copy attempt, or None if another worker owns it or it is final.

    A 'copying' row whose lease ran out belongs to a worker that died; it can be taken.
    """
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = 'copying', attempts = attempts + 1, claimed_by = %(worker)s,
                lease_expires_at = now() + make_interval(secs => %(lease)s),
                next_attempt_at = NULL, updated_at = now()
            WHERE id = %(id)s
              AND (status IN ('pending', 'queued')
                   -- A retry waits out its backoff (a duplicate job must not run it early).
                   OR (status = 'retrying'
                       AND coalesce(next_attempt_at, now()) <= now() + interval '5 seconds')
                   OR (status = 'copying' AND lease_expires_at < now()))
            RETURNING {_ROW_COLUMNS}
            """,
            {"id": ledger_id, "worker": worker, "lease": lease_seconds},
        )
        record = fetch_one(cur)
    return LedgerRow.from_record(record) if record else None


# A worker changes a row only while it holds the claim: after its lease ran out and
# another worker took the row, its late writes change nothing.
_OWNED = "id = %s AND status = 'copying' AND claimed_by = %s"


def save_upload_state(
    conn: Connection, ledger_id: int, owner: str, session_uri: str | None, offset: int
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ledger SET upload_session_uri = %s, upload_offset = %s, updated_at = now()"
            f" WHERE {_OWNED}",
            (session_uri, offset, ledger_id, owner),
        )


def record_done(
    conn: Connection,
    ledger_id: int,
    owner: str,
    *,
    destination: str,
    destination_id: str,
    destination_url: str,
    size: int,
    md5: str,
) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = 'done', destination = %s, destination_id = %s, destination_url = %s,
                size_bytes = %s, md5 = %s, last_error = NULL, done_at = now(), updated_at = now(),
                claimed_by = NULL, lease_expires_at = NULL,
                upload_session_uri = NULL, upload_offset = NULL
            WHERE {_OWNED}
            """,
            (destination, destination_id, destination_url, size, md5, ledger_id, owner),
        )
        return cur.rowcount == 1


def record_retry(conn: Connection, ledger_id: int, owner: str, error: str, delay_seconds: float) -> bool:
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = 'retrying', last_error = %s, updated_at = now(),
                next_attempt_at = now() + make_interval(secs => %s),
                claimed_by = NULL, lease_expires_at = NULL
            WHERE {_OWNED}
            """,
            (error, delay_seconds, ledger_id, owner),
        )
        return cur.rowcount == 1


def record_paused(conn: Connection, ledger_id: int, owner: str, error: str, until: datetime) -> bool:
    """The destination paused uploads mid-attempt (Drive's daily cap): 'retrying' at `until`,
    and the attempt does not count."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = 'retrying', attempts = greatest(attempts - 1, 0), last_error = %s,
                next_attempt_at = %s, updated_at = now(), claimed_by = NULL, lease_expires_at = NULL
            WHERE {_OWNED}
            """,
            (error, until, ledger_id, owner),
        )
        return cur.rowcount == 1


def record_final(conn: Connection, ledger_id: int, owner: str, status: str, error: str) -> bool:
    """End the row as 'failed' or 'gone' with a readable reason."""
    assert status in ("failed", "gone")
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = %s, last_error = %s, updated_at = now(),
                claimed_by = NULL, lease_expires_at = NULL, next_attempt_at = NULL
            WHERE {_OWNED}
            """,
            (status, error, ledger_id, owner),
        )
        return cur.rowcount == 1


def reset_failed(conn: Connection, kinds: Sequence[str]) -> list[Row]:
    """Give 'failed' rows a fresh set of attempts ('pending' again); return id and kind.

    For after the cause is fixed (a Drive folder shared again, a key replaced): the
    reason stays in last_error until the next attempt.
    """
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ledger SET status = 'pending', attempts = 0, next_attempt_at = NULL,
                              upload_session_uri = NULL, upload_offset = NULL, updated_at = now()
            WHERE status = 'failed' AND kind = ANY(%s)
            RETURNING id, kind, source_table, source_id
            """,
            (list(kinds),),
        )
        return fetch_all(cur)


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
            ORDER BY {PRIORITY_ORDER.replace("kind", "f.kind")}
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


def status_report(conn: Connection) -> list[dict[str, Any]]:
    """Per kind: files, backed up, failed, gone, in progress, bytes done and remaining."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT kind,
                   count(*) AS files,
                   count(*) FILTER (WHERE status = 'done') AS backed_up,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'gone') AS gone,
                   count(*) FILTER (WHERE status IN ('pending', 'queued', 'copying', 'retrying'))
                       AS in_progress,
                   coalesce(sum(size_bytes) FILTER (WHERE status = 'done'), 0)::bigint AS bytes_done,
                   coalesce(sum(coalesce(size_bytes, expected_size, 0))
                       FILTER (WHERE status NOT IN ('done', 'gone')), 0)::bigint AS bytes_remaining
            FROM ledger GROUP BY kind ORDER BY {PRIORITY_ORDER}
            """
        )
        return [dict(r) for r in fetch_all(cur)]


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

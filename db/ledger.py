"""The ledger's state machine: named queries, every status change a conditional UPDATE.

Status machine: pending -> queued -> copying -> done; copying -> retrying -> queued;
-> failed (gave up, or a permanent error); -> gone (the source answered 404/410 past the
file's guaranteed window, or for longer than FALBACK_MISSING_RETRY_SECONDS inside it).
'pending' rows are the backlog; 'queued' ones have a job in Redis's bounded window
(db/dispatch.py moves rows from the one to the other).
A copy attempt's claim and writes are db/attempts.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.kinds import priority_sql
from db.connection import Connection, Row, fetch_all

PRIORITY_ORDER = priority_sql()


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
    source_created_at: datetime | None
    claimed_by: str | None = None  # set by claim(): the owner every later write must name
    expires_at: datetime | None = None  # when fal may delete the file (created + expiry days)
    missing_since: datetime | None = None  # first 404/410 inside that window

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LedgerRow:
        return cls(**{f: record[f] for f in cls.__dataclass_fields__})


ROW_COLUMNS = ", ".join(LedgerRow.__dataclass_fields__)


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


NEW_FILE_INSERT = """
    INSERT INTO ledger (source_url, kind, source_table, source_id, variant, fal_request_id,
                        file_name, content_type, expected_size, source_created_at, expires_at)
    SELECT %(source_url)s, %(kind)s, %(source_table)s, %(source_id)s, %(variant)s,
           %(fal_request_id)s, %(file_name)s, %(content_type)s, %(expected_size)s, c.at,
           c.at + make_interval(days => %(days)s)
    FROM (SELECT coalesce(%(source_created_at)s::timestamptz, now()) AS at) c
"""


# New files in one statement, in the order given (parameters `files_<field of NewFile>`, and
# `days`). `only_if` guards the whole insert (db/deliveries: only for a delivery not seen
# before).
def files_insert(only_if: str = "true") -> str:
    return f"""
    INSERT INTO ledger (source_url, kind, source_table, source_id, variant, fal_request_id,
                        file_name, content_type, expected_size, source_created_at, expires_at)
    SELECT f.source_url, f.kind, f.source_table, f.source_id, f.variant, f.fal_request_id,
           f.file_name, f.content_type, f.expected_size, c.at, c.at + make_interval(days => %(days)s)
    FROM unnest(%(files_source_url)s::text[], %(files_kind)s::text[], %(files_source_table)s::text[],
                %(files_source_id)s::text[], %(files_variant)s::text[], %(files_fal_request_id)s::text[],
                %(files_file_name)s::text[], %(files_content_type)s::text[],
                %(files_expected_size)s::bigint[], %(files_source_created_at)s::timestamptz[])
         WITH ORDINALITY AS f(source_url, kind, source_table, source_id, variant, fal_request_id,
                              file_name, content_type, expected_size, source_created_at, n)
    CROSS JOIN LATERAL (SELECT coalesce(f.source_created_at, now()) AS at) c
    WHERE {only_if}
    ORDER BY f.n
    ON CONFLICT (source_url) DO NOTHING
    RETURNING id, kind
    """


def files_params(files: Sequence[NewFile], expiry_days: int) -> dict[str, Any]:
    return {
        **{f"files_{name}": [getattr(f, name) for f in files] for name in NewFile.__dataclass_fields__},
        "days": expiry_days,
    }


def insert_files(conn: Connection, files: Sequence[NewFile], expiry_days: int) -> list[Row]:
    """Create ledger rows for new URLs (a URL already in the ledger is left as it is), one
    statement for all; return the id and kind of the rows created, in the order given."""
    if not files:
        return []
    with conn.cursor() as cur:
        cur.execute(files_insert(), files_params(files, expiry_days))
        return sorted(fetch_all(cur), key=lambda r: r["id"])  # ids follow the insert's order


def mark_queued(conn: Connection, ids: Sequence[int], from_status: str = "pending") -> int:
    """Rows that now have a job: 'pending' (or, for the sweep, due 'retrying') -> 'queued'.
    The dispatcher's own claim is db/dispatch.claim_window."""
    assert from_status in ("pending", "retrying")
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ledger SET status = 'queued', queued_at = now(), updated_at = now()"
            " WHERE id = ANY(%s) AND status = %s",
            (list(ids), from_status),
        )
        return cur.rowcount


def reset_failed(conn: Connection, kinds: Sequence[str]) -> list[Row]:
    """Give 'failed' rows a fresh set of attempts ('pending' again); return id and kind.

    For after the cause is fixed (a Drive folder shared again, a key replaced): the
    reason stays in last_error until the next attempt.
    """
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ledger SET status = 'pending', attempts = 0, next_attempt_at = NULL,
                              updated_at = now()
            WHERE status = 'failed' AND kind = ANY(%s)
            RETURNING id, kind, source_table, source_id
            """,
            (list(kinds),),
        )
        return fetch_all(cur)


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


def reset_failed_with_reason(conn: Connection, reason: str | None) -> list[Row]:
    """`reset_failed` for the failed rows of one reason (the status page's retry action)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ledger SET status = 'pending', attempts = 0, next_attempt_at = NULL,
                              updated_at = now()
            WHERE status = 'failed' AND last_error IS NOT DISTINCT FROM %s
            RETURNING id, kind, source_table, source_id
            """,
            (reason,),
        )
        return fetch_all(cur)

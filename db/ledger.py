"""The ledger's state machine: named queries, every status change a conditional UPDATE.

Status machine: pending -> queued -> copying -> done; copying -> retrying -> queued;
-> failed (gave up, or a permanent error); -> gone (the source answered 404/410 past the
file's guaranteed window, or for longer than FALBACK_MISSING_RETRY_SECONDS inside it).
'pending' rows are the backlog; 'queued' ones have a job in Redis's bounded window
(db/dispatch.py moves rows from the one to the other).
A worker's writes name the claim's owner, so a worker whose lease ran out changes nothing.
Every error text stored passes core.logs.redact: no URL query string or token lands here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.kinds import priority_sql
from core.logs import redact
from db import copies
from db.connection import Connection, Row, fetch_all, fetch_one

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


_ROW_COLUMNS = ", ".join(LedgerRow.__dataclass_fields__)


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


@dataclass(frozen=True)
class Claim:
    """What `claim_attempt` found, in the one statement that claimed the row (or not)."""

    row: LedgerRow | None  # None: not taken (another owner, final, or every copy waits)
    missing: list[str]  # the destinations asked about that hold no copy yet, in their order
    paused: dict[str, datetime]  # those of them that refuse uploads now, and until when
    app_files: bool  # this database has the app tables' files (falback_app_files)


_CLAIM = f"""
    WITH missing AS (
        SELECT d.name, d.n, p.paused_until
        FROM unnest(%(names)s::text[]) WITH ORDINALITY AS d(name, n)
        LEFT JOIN destination_pauses p ON p.destination = d.name AND p.paused_until > now()
        WHERE NOT EXISTS (SELECT 1 FROM copies c WHERE c.ledger_id = %(id)s AND c.destination = d.name)
    ), claimed AS (
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
          -- When every copy still to make is at a paused destination, not even a claim.
          AND (NOT EXISTS (SELECT 1 FROM missing)
               OR EXISTS (SELECT 1 FROM missing WHERE paused_until IS NULL))
        RETURNING {_ROW_COLUMNS}
    )
    SELECT c.*,
           (SELECT coalesce(array_agg(name ORDER BY n), '{{}}') FROM missing) AS missing,
           (SELECT coalesce(array_agg(name ORDER BY n), '{{}}')
            FROM missing WHERE paused_until IS NOT NULL) AS paused,
           (SELECT coalesce(array_agg(paused_until ORDER BY n), '{{}}')
            FROM missing WHERE paused_until IS NOT NULL) AS paused_until,
           to_regclass('public.falback_app_files') IS NOT NULL AS app_files
    FROM (SELECT) AS one LEFT JOIN claimed c ON true
"""


def claim_attempt(
    conn: Connection, ledger_id: int, worker: str, lease_seconds: int, destinations: Sequence[str]
) -> Claim:
    """Take the row for one copy attempt, in one statement that also says which of
    `destinations` still need a copy and which of those are paused.

    Not taken when another worker owns the row, when it is final, or when every copy still
    to make is at a paused destination. A 'copying' row whose lease ran out belongs to a
    worker that died; it can be taken.
    """
    with conn.cursor() as cur:
        params = {"id": ledger_id, "worker": worker, "lease": lease_seconds, "names": list(destinations)}
        cur.execute(_CLAIM, params)
        record = fetch_one(cur)
    assert record is not None  # the statement always returns its one row
    return Claim(
        row=LedgerRow.from_record(record) if record["id"] is not None else None,
        missing=list(record["missing"]),
        paused=dict(zip(record["paused"], record["paused_until"], strict=True)),
        app_files=bool(record["app_files"]),
    )


def claim(conn: Connection, ledger_id: int, worker: str, lease_seconds: int) -> LedgerRow | None:
    """`claim_attempt` that asks about no destination: the row, or None if another worker
    owns it or it is final."""
    return claim_attempt(conn, ledger_id, worker, lease_seconds, []).row


# A worker changes a row only while it holds the claim: after its lease ran out and
# another worker took the row, its late writes change nothing.
_OWNED = "id = %s AND status = 'copying' AND claimed_by = %s"


@dataclass(frozen=True)
class Done:
    """What `record_done` did."""

    kept: copies.NewCopy | None  # the copy the ledger's own columns now name; None: not done
    copies: int  # the copies the file has (0: none is recorded any more, so nothing was done)
    app_files: bool  # this database has the app tables' files (falback_app_files)


_DONE = f"""
    WITH held AS (
        SELECT destination, location, url, size_bytes, md5 FROM copies
        WHERE ledger_id = %(id)s AND destination IS DISTINCT FROM %(destination)s
        UNION ALL
        SELECT %(destination)s, %(location)s, %(url)s, %(size)s, %(md5)s
        WHERE %(destination)s IS NOT NULL
    ), kept AS (
        -- The first configured destination's copy, else (one since dropped from the
        -- list) any.
        SELECT h.* FROM held h
        LEFT JOIN unnest(%(names)s::text[]) WITH ORDINALITY AS d(name, n) ON d.name = h.destination
        ORDER BY d.n, h.destination
        LIMIT 1
    ), done AS (
        UPDATE ledger l
        SET status = 'done', destination = k.destination, destination_id = k.location,
            destination_url = k.url, size_bytes = k.size_bytes, md5 = k.md5, last_error = NULL,
            done_at = now(), updated_at = now(), claimed_by = NULL, lease_expires_at = NULL,
            missing_since = NULL
        FROM kept k
        WHERE l.id = %(id)s AND l.status = 'copying' AND l.claimed_by = %(owner)s
        RETURNING k.*
    ), recorded AS (
        INSERT INTO copies (ledger_id, destination, location, url, size_bytes, md5)
        SELECT %(id)s, %(destination)s, %(location)s, %(url)s, %(size)s, %(md5)s
        FROM done WHERE %(destination)s IS NOT NULL
        {copies.UPSERT}
    ), blob AS (
        -- An inline file (jobs/blob_source.py) is dropped once its copy is recorded.
        DELETE FROM webhook_blobs WHERE sha256 = %(blob)s AND EXISTS (SELECT 1 FROM done)
    )
    SELECT d.*, (SELECT count(*) FROM held) AS copies,
           to_regclass('public.falback_app_files') IS NOT NULL AS app_files
    FROM (SELECT) AS one LEFT JOIN done d ON true
"""


def record_done(
    conn: Connection,
    ledger_id: int,
    owner: str,
    destinations: Sequence[str],
    *,
    last: copies.NewCopy | None = None,
    blob: str | None = None,
) -> Done:
    """In one statement, while `owner` holds the claim: record `last` (the attempt's last
    verified copy, when it has one still to record), mark the row done with the copy of
    the first of `destinations` that holds one, and drop the inline file `blob` (its
    sha256) the source was."""
    params = {
        "id": ledger_id,
        "owner": owner,
        "names": list(destinations),
        "blob": blob,
        **(last.__dict__ if last else dict.fromkeys(("destination", "location", "url", "size", "md5"))),
    }
    with conn.cursor() as cur:
        cur.execute(_DONE, params)
        record = fetch_one(cur)
    assert record is not None  # the statement always returns its one row
    kept = None
    if record["destination"] is not None:
        kept = copies.NewCopy(
            record["destination"], record["location"], record["url"], record["size_bytes"], record["md5"]
        )
    return Done(kept, int(record["copies"]), bool(record["app_files"]))


def record_copy(conn: Connection, ledger_id: int, owner: str, copy: copies.NewCopy) -> bool:
    """One destination's verified copy, recorded while `owner` still holds the claim (the
    row itself stays 'copying' until every destination has one). The row stays locked
    until the transaction ends, so no new owner takes it meanwhile."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            WITH owned AS (SELECT id FROM ledger WHERE {_OWNED} FOR UPDATE),
            recorded AS (
                INSERT INTO copies (ledger_id, destination, location, url, size_bytes, md5)
                SELECT id, %s, %s, %s, %s, %s FROM owned
                {copies.UPSERT}
            )
            SELECT count(*) AS owned FROM owned
            """,
            (ledger_id, owner, copy.destination, copy.location, copy.url, copy.size, copy.md5),
        )
        record = fetch_one(cur)
    return bool(record and record["owned"])


def record_retry(
    conn: Connection,
    ledger_id: int,
    owner: str,
    error: str,
    delay_seconds: float,
    *,
    refund_attempt: bool = False,
) -> datetime | None:
    """'retrying' until now + `delay_seconds`; return when the row is due (None: not ours).
    With `refund_attempt` the attempt does not count (retries bounded by time instead)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = 'retrying', last_error = %s, updated_at = now(),
                attempts = CASE WHEN %s THEN greatest(attempts - 1, 0) ELSE attempts END,
                next_attempt_at = now() + make_interval(secs => %s),
                claimed_by = NULL, lease_expires_at = NULL
            WHERE {_OWNED}
            RETURNING next_attempt_at
            """,
            (redact(error), refund_attempt, delay_seconds, ledger_id, owner),
        )
        row = fetch_one(cur)
    return row["next_attempt_at"] if row else None


def mark_missing(conn: Connection, ledger_id: int, owner: str) -> tuple[datetime, datetime] | None:
    """The source answered 404/410: note since when (kept across attempts); return that
    time and the database's now (None: not ours)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger SET missing_since = coalesce(missing_since, now()), updated_at = now()
            WHERE {_OWNED}
            RETURNING missing_since, now() AS now
            """,
            (ledger_id, owner),
        )
        row = fetch_one(cur)
    return (row["missing_since"], row["now"]) if row else None


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
            (redact(error), until, ledger_id, owner),
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
            (status, redact(error), ledger_id, owner),
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

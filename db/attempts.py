"""One copy attempt on a ledger row: the worker's claim, and every write it makes while it
holds that claim (db/ledger.py has the status machine).

A worker's writes name the claim's owner, so a worker whose lease ran out changes nothing.
Every error text stored passes core.logs.redact: no URL query string or token lands here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from core.logs import redact
from db import copies
from db.connection import Connection, fetch_one
from db.ledger import ROW_COLUMNS, LedgerRow


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
        RETURNING {ROW_COLUMNS}
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

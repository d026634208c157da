"""Named queries for the sweep (jobs/sweep.py): find work the queue lost or never got.

Every status change is a conditional UPDATE, as in db/ledger.py, so a sweep racing a
worker (or another sweep) changes a row at most once.
"""

from __future__ import annotations

from collections.abc import Sequence

from db.connection import Connection, Row, fetch_all
from db.ledger import PRIORITY_ORDER

# The sweep's own reason on a row it gives up on, so an operator can tell it apart.
LEASE_LOST = "the worker stopped mid-copy (lease expired)"
_LOCK_KEY = 7_246_002  # db/migrate.py uses 7_246_001


def try_lock(conn: Connection) -> bool:
    """Take the session-level sweep lock, or return False if another sweep holds it."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s) AS locked", (_LOCK_KEY,))
        locked = fetch_all(cur)[0]["locked"]
    conn.commit()
    return bool(locked)


def unlock(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    conn.commit()


def queued_page(conn: Connection, after_id: int, size: int) -> list[Row]:
    """One page (by id) of rows that should have a job on a queue."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, kind FROM ledger WHERE status = 'queued' AND id > %s ORDER BY id LIMIT %s",
            (after_id, size),
        )
        return fetch_all(cur)


def retrying_due_page(conn: Connection, after_id: int, size: int, overdue_seconds: float = 0) -> list[Row]:
    """One page (by id) of rows whose backoff is over (by at least `overdue_seconds`)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, kind FROM ledger"
            " WHERE status = 'retrying'"
            " AND coalesce(next_attempt_at, '-infinity') <= now() - make_interval(secs => %s)"
            " AND id > %s ORDER BY id LIMIT %s",
            (overdue_seconds, after_id, size),
        )
        return fetch_all(cur)


def touch_queued(conn: Connection, ids: Sequence[int]) -> int:
    """Record that queued rows got a new job (their old one was lost)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ledger SET queued_at = now(), updated_at = now()"
            " WHERE id = ANY(%s) AND status = 'queued'",
            (list(ids),),
        )
        return cur.rowcount


def fail_expired_leases(conn: Connection, max_attempts: int, limit: int) -> list[Row]:
    """End 'copying' rows whose lease ran out and that have no attempts left.

    Without this, a file that kills its worker every time (say, out of memory) would be
    retried forever.
    """
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ledger
            SET status = 'failed', updated_at = now(), claimed_by = NULL,
                lease_expires_at = NULL, next_attempt_at = NULL,
                last_error = format('gave up after %%s attempts: %%s', attempts, %(reason)s::text)
            WHERE id IN (SELECT id FROM ledger
                         WHERE status = 'copying' AND lease_expires_at < now()
                           AND attempts >= %(max)s
                         ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
              AND status = 'copying' AND lease_expires_at < now()
            RETURNING id, source_table, source_id
            """,
            {"reason": LEASE_LOST, "max": max_attempts, "limit": limit},
        )
        return fetch_all(cur)


def requeue_expired_leases(conn: Connection, limit: int) -> list[Row]:
    """Put 'copying' rows whose worker died (lease ran out) back to 'queued'."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            UPDATE ledger
            SET status = 'queued', queued_at = now(), updated_at = now(), claimed_by = NULL,
                lease_expires_at = NULL, last_error = %(reason)s
            WHERE id IN (SELECT id FROM ledger
                         WHERE status = 'copying' AND lease_expires_at < now()
                         ORDER BY {PRIORITY_ORDER}, expires_at NULLS LAST, id
                         LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
              AND status = 'copying' AND lease_expires_at < now()
            RETURNING id, kind
            """,
            {"reason": LEASE_LOST, "limit": limit},
        )
        return fetch_all(cur)

"""The dispatch claim: pending ledger rows (the backlog) become 'queued' for the window.

The backlog lives in Postgres; Redis holds, per backup queue, only a window of jobs
(jobs/dispatch.py decides its size). One statement takes, for each kind, as many of the
kind's pending rows as its window has room for, closest to expiry first, and marks them
'queued'. FOR UPDATE SKIP LOCKED plus the `status = 'pending'` condition mean two
dispatchers (threads, processes, machines) never take the same row; a transaction-level
advisory lock, taken first, makes them top up one after the other, so that together they
never overfill a window either.
"""

from __future__ import annotations

from collections.abc import Mapping

from db.connection import Connection, Row, fetch_all

_LOCK_KEY = 7_246_003  # db/migrate.py uses 7_246_001, db/sweeps.py 7_246_002

# Two statements sent together, one round trip. Under READ COMMITTED each statement takes
# its own snapshot, so the claim counts the window after the lock is held: it sees what
# the previous dispatcher committed.
_CLAIM = f"""
    SELECT pg_advisory_xact_lock({_LOCK_KEY});
    WITH room AS (
        SELECT w.kind,
               greatest(w.size - (SELECT count(*) FROM ledger q
                                  WHERE q.status = 'queued' AND q.kind = w.kind), 0) AS n
        FROM unnest(%(kinds)s::text[], %(sizes)s::int[]) AS w(kind, size)
    ), picked AS (
        SELECT p.id
        FROM room CROSS JOIN LATERAL (
            SELECT id FROM ledger
            WHERE status = 'pending' AND kind = room.kind
            ORDER BY expires_at NULLS LAST, id
            LIMIT room.n
            FOR UPDATE SKIP LOCKED
        ) p
    )
    UPDATE ledger SET status = 'queued', queued_at = now(), updated_at = now()
    WHERE id IN (SELECT id FROM picked) AND status = 'pending'
    RETURNING id, kind, expires_at
"""


def claim_window(conn: Connection, windows: Mapping[str, int]) -> list[Row]:
    """Mark as 'queued' the pending rows that fit each kind's window ({kind: size}); return
    their id, kind and expires_at, closest to expiry first. The rows stay locked until the
    caller commits (after their jobs exist) or rolls back (they are 'pending' again)."""
    kinds = list(windows)
    with conn.cursor() as cur:
        cur.execute(_CLAIM, {"kinds": kinds, "sizes": [windows[k] for k in kinds]})
        rows = fetch_all(cur)
    return sorted(rows, key=lambda r: (r["expires_at"] is None, r["expires_at"], r["id"]))


def backlog(conn: Connection) -> dict[str, int]:
    """Pending rows per kind: the work waiting in Postgres for room in its window."""
    with conn.cursor() as cur:
        cur.execute("SELECT kind, count(*) AS n FROM ledger WHERE status = 'pending' GROUP BY kind")
        return {r["kind"]: r["n"] for r in fetch_all(cur)}

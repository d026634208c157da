"""Hand ledger rows to the queues: the one path backfill, webhooks, relay and sweeps share.

Rows are committed as 'pending' before their jobs exist; if the process dies in between,
or Redis is down, they stay 'pending' and the next sweep or backfill enqueues them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from redis import Redis

from core.config import Config
from db import ledger
from db.connection import Connection
from jobs.queues import chunked, enqueue_batch

BATCH_SIZE = 1000
Progress = Callable[[int, int], None]


def enqueue_rows(
    conn: Connection,
    redis: Redis,
    config: Config,
    rows: Sequence[tuple[int, str]],
    progress: Progress | None = None,
) -> int:
    """Enqueue (ledger id, kind) pairs in batches and mark them queued; return how many."""
    conn.commit()
    done = 0
    for batch in chunked(rows, BATCH_SIZE):
        enqueue_batch(redis, config, batch)
        ledger.mark_queued(conn, [ledger_id for ledger_id, _ in batch])
        conn.commit()
        done += len(batch)
        if progress:
            progress(done, len(rows))
    return done

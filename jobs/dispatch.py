"""The dispatcher: Postgres holds the backlog, each RQ backup queue a bounded window of it.

Every producer (webhooks, relay, backfill, the status page's retry, fal result fetches)
only commits ledger rows as 'pending' and then calls `top_up`; so does every worker
after each job it ran, and the sweep as a safety net. A top-up fills each backup queue
up to FALBACK_QUEUE_WINDOW jobs per worker serving that queue (counted from RQ's worker
registry; at least one, so the first worker to start finds work), taking the pending
rows of each kind closest to expiry first (db/dispatch.py). Workers serve the queues in
priority order, so priority holds across the whole backlog, and Redis memory depends on
the number of workers, never on the size of the backlog.

A row is 'queued' only once its job is in Redis: the claim and the enqueue share one
transaction, so Redis being down leaves the rows 'pending'. If the process dies after
the enqueue but before the commit, the job finds its row 'pending', which its claim
accepts; a 'queued' row whose job Redis lost is the sweep's (`lost_queued`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from redis import Redis
from rq import Queue, worker_registration

from core.config import Config
from core.kinds import KIND_NAMES
from db import dispatch
from db.connection import Connection
from jobs.queues import LIVE, QUEUE_FOR_KIND, delete_jobs, enqueue_batch, job_states

log = logging.getLogger(__name__)
_LOGGED_IDS = 20


def window_sizes(redis: Redis, config: Config, kinds: Iterable[str] = KIND_NAMES) -> dict[str, int]:
    """{kind: most jobs its queue may hold}, from the workers serving each queue (one
    round trip)."""
    kinds = list(kinds)
    with redis.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.scard(worker_registration.WORKERS_BY_QUEUE_KEY % QUEUE_FOR_KIND[kind])
        workers: list[int] = pipe.execute()
    return {k: config.queue_window_per_worker * max(n, 1) for k, n in zip(kinds, workers, strict=True)}


def top_up(
    conn: Connection, redis: Redis, config: Config, kinds: Iterable[str] = KIND_NAMES
) -> list[tuple[int, str]]:
    """Fill the windows of these kinds' queues from the backlog; return the (ledger id,
    kind) pairs dispatched. Commits what the caller left open first, so that its rows are
    visible to the claim.

    Raises redis.RedisError (the rows stay 'pending': the next top-up or sweep takes them)
    and psycopg2 errors as they are.
    """
    conn.commit()
    windows = window_sizes(redis, config, kinds)
    try:
        rows = [(r["id"], r["kind"]) for r in dispatch.claim_window(conn, windows)]
        if rows:
            # An earlier job of the same id that is over (a failed file given new attempts)
            # would make RQ skip the new one.
            delete_jobs(redis, [s for s in job_states(redis, rows) if s.exists and s.status not in LIVE])
            enqueue_batch(redis, config, rows)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    if rows:
        ids = ", ".join(str(i) for i, _ in rows[:_LOGGED_IDS])
        more = f" and {len(rows) - _LOGGED_IDS} more" if len(rows) > _LOGGED_IDS else ""
        log.info("dispatched ledger %s%s", ids, more)
    return rows


def top_up_for(
    conn: Connection, redis: Redis, config: Config, rows: Sequence[tuple[int, str]]
) -> list[tuple[int, str]]:
    """After intake: new (or reset) 'pending' rows, as (ledger id, kind), start at once
    when their queue's window has room. Nothing to do for no rows.

    A kind whose queue still holds a job is left out: no worker serving that queue is
    idle (an idle one would have taken the job), and every worker tops up after each job,
    by when these rows are committed. So through a burst of intake a request costs one
    Redis round trip, not the dispatch lock, claim and commit.
    """
    conn.commit()
    kinds = sorted({kind for _, kind in rows}, key=KIND_NAMES.index)
    if not kinds:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for kind in kinds:
            pipe.llen(Queue.redis_queue_namespace_prefix + QUEUE_FOR_KIND[kind])
        waiting: list[int] = pipe.execute()
    idle = [kind for kind, jobs in zip(kinds, waiting, strict=True) if not jobs]
    return top_up(conn, redis, config, idle) if idle else []

"""The sweep: hand the queue whatever it lost or never got. Postgres is the source of truth.

One pass, called by cron (every FALBACK_SWEEP_INTERVAL seconds), by the relay after
every (re)connect, and by `falback sweep`:

  a. created        app files with no ledger row -> create the rows ('pending': the backlog)
  b. lost_queued    'queued' rows whose RQ job is gone (Redis restarted or was flushed)
  c. retrying_due   'retrying' rows past next_attempt_at whose retry job is gone, or is
                    still scheduled 5 minutes after it was due (no scheduler runs)
  d. expired_leases 'copying' rows whose worker died (lease ran out) -> 'queued' again;
                    rows that had no attempts left end as 'failed' (gave_up)
  e. dispatched     the windows topped up from the backlog (jobs/dispatch.py), as every
                    producer and every worker after each job does: this one covers a
                    top-up that failed (Redis was down, a process died)
  f. fal_results    fal deliveries whose result is still to be fetched from fal's queue
                    (within the hour fal keeps it) and whose fetch job is gone

Bounded: each category handles at most FALBACK_SWEEP_LIMIT rows per pass, the rest go
next pass. Batched: rows are read in pages and job states checked in Redis pipelines, so
a pass costs a few round trips per thousand rows, never one per row.

Job ids are deterministic (`backup-<ledger id>`), so a sweep and the live path never put
one file on the queue twice. A job that exists but is over (failed, finished, stopped,
canceled, or 'started' by a worker that no longer heartbeats) would block a new one with
the same id, so it is deleted first, without trusting RQ's records of it (jobs/queues.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2
from redis import Redis
from rq.job import JobStatus

from core.config import Config
from core.kinds import KIND_NAMES
from db import app_rows, app_sync, deliveries, ledger, sweeps
from db.connection import Connection, Row, connection
from jobs.dispatch import top_up
from jobs.fal_results import enqueue_fetch
from jobs.queues import LIVE, delete_jobs, enqueue_batch, job_states
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
# For a row whose lease expired, a 'started' job is a dead worker's: RQ kills a live
# worker's job at the job timeout, and the lease is the job timeout + 60 s.
_LIVE_AFTER_LEASE = LIVE - {JobStatus.STARTED}
_LOGGED_IDS = 20
# A scheduler takes over within about 90 s of its holder's death (jobs/worker.py).
_OVERDUE_SECONDS = 300.0


@dataclass
class SweepCounts:
    created: int = 0
    lost_queued: int = 0
    retrying_due: int = 0
    expired_leases: int = 0
    gave_up: int = 0
    dispatched: int = 0
    fal_results: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


def sweep(config: Config, conn: Connection, redis: Redis, *, limit: int | None = None) -> SweepCounts | None:
    """Run one pass and return what it did per category, or None if another sweep is
    running (passes never overlap, so two never race to re-enqueue the same row).

    Raises redis.RedisError if Redis is unreachable (rows it had committed stay
    'pending' or 'queued' and the next pass picks them up) and psycopg2 errors as they are.
    """
    if not sweeps.try_lock(conn):
        log.info("sweep: skipped, another sweep is running")
        return None
    try:
        return _sweep(config, conn, redis, limit or config.sweep_limit)
    finally:
        # A session that died took its lock with it; the original error is the one to see.
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()  # an error may have left the transaction aborted
            sweeps.unlock(conn)


def _sweep(config: Config, conn: Connection, redis: Redis, limit: int) -> SweepCounts:
    started = time.monotonic()
    counts = SweepCounts()

    created: list[tuple[int, str]] = []
    if app_sync.app_files_exist(conn):
        new_rows = app_rows.insert_from_app(conn, KIND_NAMES, limit, config.expiry_days)
        created = [(r["id"], r["kind"]) for r in new_rows]
    conn.commit()  # new rows are safe as 'pending': the backlog the top-up below takes from
    counts.created = len(created)
    _log_ids("created ledger rows for new app files", created)

    lost = _resubmit(redis, config, _pages(conn, sweeps.queued_page), LIVE, limit)
    sweeps.touch_queued(conn, [i for i, _ in lost])
    conn.commit()
    counts.lost_queued = len(lost)
    _log_ids("re-enqueued 'queued' rows whose job was lost", lost)

    due = _resubmit(redis, config, _pages(conn, sweeps.retrying_due_page), LIVE, limit)
    # A retry still scheduled in RQ this long after it was due means no scheduler runs
    # (its worker died and none took over): the job counts as lost.
    overdue = _resubmit(
        redis,
        config,
        _pages(conn, lambda c, after, size: sweeps.retrying_due_page(c, after, size, _OVERDUE_SECONDS)),
        LIVE - {JobStatus.SCHEDULED},
        limit - len(due),
    )
    due += overdue
    ledger.mark_queued(conn, [i for i, _ in due], from_status="retrying")
    conn.commit()
    counts.retrying_due = len(due)
    _log_ids("re-enqueued due 'retrying' rows whose retry job was gone", due)
    _log_ids("re-enqueued retries still scheduled long after they were due", overdue, logging.WARNING)

    gave_up = sweeps.fail_expired_leases(conn, config.max_attempts, limit)
    for row in gave_up:
        app_sync.sync_app_row(conn, row["source_table"], row["source_id"])
    # Committed before enqueueing: if Redis fails now, the rows are 'queued' without a
    # job, which (c) repairs next pass.
    expired = [(r["id"], r["kind"]) for r in sweeps.requeue_expired_leases(conn, limit)]
    conn.commit()
    _resubmit(redis, config, [expired], _LIVE_AFTER_LEASE, limit)
    counts.expired_leases, counts.gave_up = len(expired), len(gave_up)
    _log_ids("re-enqueued rows whose worker died mid-copy", expired)
    _log_ids(
        "gave up on rows whose worker died on the last attempt",
        [(r["id"], "") for r in gave_up],
        level=logging.WARNING,
    )

    # Last: the lost and expired rows above count in their windows already.
    counts.dispatched = len(top_up(conn, redis, config))

    if config.fal_key:
        counts.fal_results = sum(
            enqueue_fetch(redis, d, replace_ended=False) for d in deliveries.fetchable_unresolved(conn, limit)
        )
        conn.commit()

    log.info("sweep: %s (%.2fs)", counts, time.monotonic() - started)
    return counts


def run_sweep(config: Config) -> SweepCounts | None:
    """One pass with connections of its own (CLI and scheduled job)."""
    assert config.database_url and config.redis_url
    redis = Redis.from_url(config.redis_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        with connection(config.database_url, application_name="falback-sweep") as conn:
            return sweep(config, conn, redis)
    finally:
        redis.close()


def scheduled_sweep(context: WorkerContext) -> dict[str, int] | None:
    """The cron job (queue falback-maintenance); its result shows in the dashboard."""
    conn = context.db()
    try:
        counts = sweep(context.config, conn, context.redis)
    finally:
        conn.rollback()
    return counts.as_dict() if counts else None


Page = Callable[[Connection, int, int], list[Row]]


def _pages(conn: Connection, query: Page) -> Iterable[list[tuple[int, str]]]:
    """Every row the query matches, a page at a time (keyset by id: stable while rows change)."""
    after = 0
    while page := query(conn, after, BATCH_SIZE):
        conn.commit()  # no snapshot held open while Redis is asked
        yield [(r["id"], r["kind"]) for r in page]
        after = page[-1]["id"]


def _resubmit(
    redis: Redis,
    config: Config,
    pages: Iterable[Sequence[tuple[int, str]]],
    live: frozenset[JobStatus],
    limit: int,
) -> list[tuple[int, str]]:
    """Enqueue the rows whose job is missing or over; return them (at most `limit`)."""
    resubmitted: list[tuple[int, str]] = []
    for page in pages:
        states = job_states(redis, page)
        needed = [(item, state) for item, state in zip(page, states, strict=True) if state.status not in live]
        needed = needed[: limit - len(resubmitted)]
        for start in range(0, len(needed), BATCH_SIZE):
            batch = needed[start : start + BATCH_SIZE]
            delete_jobs(redis, [state for _, state in batch if state.exists])
            enqueue_batch(redis, config, [item for item, _ in batch])
        resubmitted += [item for item, _ in needed]
        if len(resubmitted) >= limit:
            break
    return resubmitted


def _log_ids(what: str, rows: Sequence[tuple[int, Any]], level: int = logging.INFO) -> None:
    if rows:
        ids = ", ".join(str(i) for i, _ in rows[:_LOGGED_IDS])
        more = f" and {len(rows) - _LOGGED_IDS} more" if len(rows) > _LOGGED_IDS else ""
        log.log(level, "%s: ledger %s%s", what, ids, more)

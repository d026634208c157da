"""The RQ queues, one per priority, and deterministic enqueueing.

Job ids are `backup-<ledger id>`, so the live path, a backfill and a sweep can never
put the same file on the queue twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job

from core.config import Config
from core.kinds import KINDS

log = logging.getLogger(__name__)

# Highest priority first; `rq worker` serves queues in the order given.
QUEUE_FOR_KIND = {k.name: k.queue for k in sorted(KINDS, key=lambda k: k.priority)}
QUEUE_NAMES = tuple(QUEUE_FOR_KIND.values())
BACKUP_FUNC = "jobs.backup.backup_file"
# Scheduled sweeps and the daily backfill (jobs/schedule.py). Served before the backup
# queues: its jobs only enqueue and take seconds, and under strict priority a backlog of
# copies would otherwise starve the very sweep that recovers lost or stuck work.
MAINTENANCE_QUEUE = "falback-maintenance"


def job_id(ledger_id: int) -> str:
    return f"backup-{ledger_id}"


def queues(redis: Redis) -> list[Queue]:
    return [Queue(name, connection=redis) for name in QUEUE_NAMES]


def worker_queues(redis: Redis) -> list[Queue]:
    """What `falback worker` serves, in order: maintenance, then the backup queues."""
    return [Queue(MAINTENANCE_QUEUE, connection=redis), *queues(redis)]


def _job_options(config: Config, ledger_id: int) -> dict[str, object]:
    intervals = config.retry_intervals()
    return {
        "job_id": job_id(ledger_id),
        "timeout": config.job_timeout_seconds,
        "result_ttl": 3600,
        "failure_ttl": 7 * 24 * 3600,
        "description": f"backup ledger row {ledger_id}",
        "retry": Retry(max=len(intervals), interval=intervals) if intervals else None,
    }


def enqueue_one(redis: Redis, config: Config, ledger_id: int, kind: str) -> bool:
    """Enqueue a backup job unless one exists; return whether a job was added."""
    queue = Queue(QUEUE_FOR_KIND[kind], connection=redis)
    try:
        queue.enqueue_call(BACKUP_FUNC, args=(ledger_id,), unique=True,
                           **_job_options(config, ledger_id))  # type: ignore[arg-type]
    except DuplicateJobError:
        return False
    return True


def enqueue_batch(redis: Redis, config: Config, items: Sequence[tuple[int, str]]) -> list[int]:
    """Enqueue jobs for (ledger id, kind) pairs in two round trips; return the ids added.

    Ids whose job already exists are skipped (RQ's `unique` is not available in bulk).
    Two concurrent batches could both add a job for one row; the job's claim makes the
    second one a no-op, so at worst a job runs for nothing.
    """
    if not items:
        return []
    with redis.pipeline(transaction=False) as pipe:
        for ledger_id, _ in items:
            pipe.exists(Job.key_for(job_id(ledger_id)))
        exists = pipe.execute()
    by_queue: dict[str, list[int]] = defaultdict(list)
    for (ledger_id, kind), present in zip(items, exists, strict=True):
        if not present:
            by_queue[QUEUE_FOR_KIND[kind]].append(ledger_id)
    added: list[int] = []
    with redis.pipeline() as pipe:
        for name, ids in by_queue.items():
            queue = Queue(name, connection=redis)
            queue.enqueue_many(
                [Queue.prepare_data(BACKUP_FUNC, args=(i,), **_job_options(config, i))  # type: ignore[arg-type]
                 for i in ids],
                pipeline=pipe,
            )
            added.extend(ids)
        pipe.execute()
    return added


def counts(redis: Redis) -> dict[str, int]:
    return {q.name: q.count for q in queues(redis)}


def chunked(items: Sequence[tuple[int, str]], size: int) -> Iterable[Sequence[tuple[int, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

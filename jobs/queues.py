"""The RQ queues, one per priority, deterministic enqueueing, and the state and deletion
of a row's job (for the sweep).

Job ids are `backup-<ledger id>`, so the live path, a backfill and a sweep can never
put the same file on the queue twice.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

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
# The weekly `verify` (jobs/verify.py) reads copies back for minutes or hours: served
# last, so it starts only when no copy waits, and never delays a sweep.
VERIFY_QUEUE = "falback-verify"


# A job in one of these states will still run; anything else (or no job) needs a new one.
LIVE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.STARTED})


def job_id(ledger_id: int) -> str:
    return f"backup-{ledger_id}"


def queues(redis: Redis) -> list[Queue]:
    return [Queue(name, connection=redis) for name in QUEUE_NAMES]


def worker_queues(redis: Redis) -> list[Queue]:
    """What `falback worker` serves, in order: maintenance, the backup queues, verify."""
    return [
        Queue(MAINTENANCE_QUEUE, connection=redis),
        *queues(redis),
        Queue(VERIFY_QUEUE, connection=redis),
    ]


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
        queue.enqueue_call(BACKUP_FUNC, args=(ledger_id,), unique=True, **_job_options(config, ledger_id))  # type: ignore[arg-type]
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
                [
                    Queue.prepare_data(BACKUP_FUNC, args=(i,), **_job_options(config, i))  # type: ignore[arg-type]
                    for i in ids
                ],
                pipeline=pipe,
            )
            added.extend(ids)
        pipe.execute()
    return added


def counts(redis: Redis) -> dict[str, int]:
    return {q.name: q.count for q in queues(redis)}


@dataclass(frozen=True)
class JobState:
    """A row's RQ job as its hash says, read without RQ's own deserialisation (which a
    stale or damaged record can make raise)."""

    job_id: str
    exists: bool
    status: JobStatus | None  # None: no job, an unknown status, or a started job gone dead
    queues: frozenset[str]  # the queue its hash names, and the one its row's kind uses


def job_states(redis: Redis, items: Sequence[tuple[int, str]]) -> list[JobState]:
    """The state of the job of each (ledger id, kind), in one round trip (two when some
    say 'started').

    A 'started' job whose execution no longer heartbeats (its worker was killed) will
    never finish: it counts as over, so the row gets a new job.
    """
    ids = [job_id(i) for i, _ in items]
    with redis.pipeline(transaction=False) as pipe:
        for jid in ids:
            pipe.exists(Job.key_for(jid))
            pipe.hmget(Job.key_for(jid), "status", "origin")
        raw: list[Any] = pipe.execute()
    states = [
        JobState(
            jid,
            bool(raw[2 * n]),
            _status(raw[2 * n + 1][0]),
            frozenset({_text(raw[2 * n + 1][1]), QUEUE_FOR_KIND[kind]}) - {""},
        )
        for n, (jid, (_, kind)) in enumerate(zip(ids, items, strict=True))
    ]
    started = sorted({q for s in states if s.status == JobStatus.STARTED for q in s.queues})
    if not started:
        return states
    with redis.pipeline(transaction=False) as pipe:
        for name in started:
            # Entries are `<job id>:<execution id>`, scored by when their heartbeat lapses.
            pipe.zrangebyscore(StartedJobRegistry(name, connection=redis).key, time.time(), "+inf")
        beating = {_text(member).partition(":")[0] for members in pipe.execute() for member in members}
    return [
        replace(s, status=None) if s.status == JobStatus.STARTED and s.job_id not in beating else s
        for s in states
    ]


def _status(value: bytes | None) -> JobStatus | None:
    if value is None:
        return None
    try:
        return JobStatus(value.decode())
    except ValueError:
        return None  # a status this RQ does not know: treat the job as unusable


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value or ""


_REGISTRIES = (
    FinishedJobRegistry,
    FailedJobRegistry,
    DeferredJobRegistry,
    ScheduledJobRegistry,
    CanceledJobRegistry,
    StartedJobRegistry,
)


def delete_jobs(redis: Redis, states: Sequence[JobState]) -> None:
    """Delete jobs that exist but will not run again: their keys, their executions, and
    every entry naming them in their queues and registries.

    RQ keeps a failed job (and its id) for failure_ttl and a finished one for
    result_ttl; while it exists, `unique` enqueue and enqueue_batch skip the id. This is
    done with plain commands on RQ's key names, in two round trips, reading none of RQ's
    records: a killed worker leaves those inconsistent (an execution whose record expired
    before its registry entry did made RQ's own Job.delete raise "Execution ... not
    found in Redis"), and no such inconsistency may stop a sweep. The started registry
    matters most: an entry left there would, once its heartbeat lapsed, make RQ's cleanup
    fail the new job of the same id.
    """
    if not states:
        return
    names = sorted({q for s in states for q in s.queues})
    with redis.pipeline(transaction=False) as pipe:
        for s in states:
            pipe.zrange(ExecutionRegistry(s.job_id, connection=redis).key, 0, -1)
        for name in names:
            pipe.zrange(StartedJobRegistry(name, connection=redis).key, 0, -1)
        # A key of the wrong type reads as empty; an outage still raises.
        reads = [r if isinstance(r, list) else [] for r in pipe.execute(raise_on_error=False)]
    executions, started = reads[: len(states)], dict(zip(names, reads[len(states) :], strict=True))
    with redis.pipeline() as pipe:
        for s, execution_ids in zip(states, executions, strict=True):
            job = Job(s.job_id, connection=redis)
            pipe.delete(
                job.key,
                job.dependents_key,
                job.dependencies_key,
                ExecutionRegistry(s.job_id, connection=redis).key,
                *(Execution(_text(e), s.job_id, connection=redis).key for e in execution_ids),
            )
            for name in s.queues:
                queue = Queue(name, connection=redis)
                pipe.lrem(queue.key, 0, s.job_id)
                pipe.lrem(queue.intermediate_queue_key, 0, s.job_id)
                for registry in _REGISTRIES:
                    pipe.zrem(registry(name, connection=redis).key, s.job_id)
                mine = [m for m in started[name] if _text(m).startswith(f"{s.job_id}:")]
                if mine:
                    pipe.zrem(StartedJobRegistry(name, connection=redis).key, *mine)
        # A command failing on a damaged key (WRONGTYPE) must not stop the others.
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception):
                log.warning("deleting old jobs: %s", result)
    log.info(
        "deleted %d finished or failed job(s) before re-enqueueing: %s",
        len(states),
        ", ".join(s.job_id for s in states[:20]),
    )

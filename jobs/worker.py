"""The worker process: what every job receives (config and connections), and the RQ worker
that hands it over.

A job function takes a `WorkerContext` as its first argument; the queue stores only the
other arguments (ledger id, delivery id ...). `ContextJob` puts the context in front when
the job runs, so no job reads a module global or the environment.

The context opens its connections lazily, in the process that uses them: an in-process
worker (RQ's `SimpleWorker`: `falback worker`) reuses one Postgres connection for job after
job, and a forking worker's work horse (`falback worker --fork`) opens its own, never the
parent's.

After each job, and once when it starts, a worker tops up the backup queues it serves
from the backlog in Postgres (jobs/dispatch.py): the queues hold only a window of work.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psycopg2
from redis import Redis, RedisError
from rq import Queue, SimpleWorker, Worker
from rq.job import Job

from core.config import Config
from db.connection import Connection, connect
from jobs.dispatch import top_up
from jobs.queues import QUEUE_FOR_KIND

log = logging.getLogger(__name__)


class WorkerContext:
    """Config and connections for the jobs of one worker process."""

    def __init__(self, config: Config, redis: Redis) -> None:
        assert config.database_url, "workers need DATABASE_URL"
        self.config = config
        self.redis = redis
        self._db: Connection | None = None
        self._pid = os.getpid()

    def db(self) -> Connection:
        """This process's Postgres connection, opened on first use; reopened if it broke."""
        if self._pid != os.getpid():
            # A forked work horse: the parent's socket is not ours to use or close.
            self._db, self._pid = None, os.getpid()
        if self._db is not None:
            try:
                self._db.rollback()  # whatever the last job left open
            except psycopg2.Error:
                self._db.close()  # broken (say, Postgres restarted): open a new one
            if self._db.closed:
                self._db = None
        if self._db is None:
            assert self.config.database_url
            self._db = connect(self.config.database_url, application_name="falback-worker")
        return self._db

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None


class ContextJob(Job):
    """A job whose function gets the worker's context as its first argument."""

    context: WorkerContext | None = None

    def _execute(self) -> Any:
        if self.context is None:
            raise RuntimeError(f"job {self.id} ran outside a falback worker (no context)")
        assert self.func is not None
        return self.func(self.context, *self.args, **self.kwargs)


class _GivesContext:
    context: WorkerContext
    queues: list[Queue]

    def perform_job(self, job: Job, queue: Queue) -> bool:
        if isinstance(job, ContextJob):
            job.context = self.context
        return super().perform_job(job, queue)  # type: ignore[misc, no-any-return]

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self.top_up()  # a worker that joins widens the windows: fill them before waiting
        return super().work(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)  # type: ignore[misc]
        # In this process (a forking worker's parent, not its horse): a job's slot is free.
        self.top_up()

    def top_up(self) -> None:
        """Refill the windows of the backup queues this worker serves; a failure is left to
        the next job's top-up or the sweep."""
        served = {q.name for q in self.queues}
        kinds = [kind for kind, name in QUEUE_FOR_KIND.items() if name in served]
        if not kinds:
            return
        try:
            top_up(self.context.db(), self.context.redis, self.context.config, kinds)
        except (psycopg2.Error, RedisError) as e:
            log.warning("could not top up the queues (%s); the next job or sweep does", type(e).__name__)


class FalbackWorker(_GivesContext, Worker):
    """Forks a work horse per job (`falback worker --fork`): a job that crashes the
    interpreter or leaks takes only its horse, at a fork per file."""


class InProcessWorker(_GivesContext, SimpleWorker):
    """Runs jobs in this process, reusing its connections (`falback worker`, tests). RQ
    still ends a job at its timeout (SIGALRM, as in a work horse); a copy streams in
    chunks, so memory does not grow with files (tests/test_drive_crash.py measures it)."""


def make_worker(
    config: Config, redis: Redis, queues: list[Queue], *, fork: bool = False
) -> FalbackWorker | InProcessWorker:
    worker_class = FalbackWorker if fork else InProcessWorker
    worker = worker_class(queues, connection=redis, job_class=ContextJob)
    worker.context = WorkerContext(config, redis)
    return worker

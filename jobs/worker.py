"""The worker process: what every job receives (config and connections), and the RQ worker
that hands it over.

A job function takes a `WorkerContext` as its first argument; the queue stores only the
other arguments (ledger id, delivery id ...). `ContextJob` puts the context in front when
the job runs, so no job reads a module global or the environment.

The context opens its connections lazily, in the process that uses them: a forking
worker's work horse opens its own, never the parent's, and an in-process worker
(`SimpleWorker`, tests) reuses one connection for job after job.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg2
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job

from core.config import Config
from db.connection import Connection, connect


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

    def perform_job(self, job: Job, queue: Queue) -> bool:
        if isinstance(job, ContextJob):
            job.context = self.context
        return super().perform_job(job, queue)  # type: ignore[misc, no-any-return]


class FalbackWorker(_GivesContext, Worker):
    """Forks a work horse per job: a job that crashes or leaks takes only its horse."""


class InProcessWorker(_GivesContext, SimpleWorker):
    """Runs jobs in this process, reusing its connections (tests, where nothing is killed)."""


def make_worker(
    config: Config, redis: Redis, queues: list[Queue], *, fork: bool = True
) -> FalbackWorker | InProcessWorker:
    worker_class = FalbackWorker if fork else InProcessWorker
    worker = worker_class(queues, connection=redis, job_class=ContextJob)
    worker.context = WorkerContext(config, redis)
    return worker

"""The worker context: one Postgres connection per process, reused job after job, replaced
when it breaks, never shared across a fork; jobs get it as their first argument."""

from __future__ import annotations

import os

import psycopg2
import pytest
from redis import Redis
from rq import Queue

from core.config import Config
from jobs.worker import ContextJob, WorkerContext, make_worker


def backend_pid(context: WorkerContext) -> int:
    with context.db().cursor() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        row = cur.fetchone()
    assert row is not None
    return int(row["pid"])  # type: ignore[call-overload]


def test_one_connection_is_reused_and_replaced_when_it_breaks(config: Config, redis: Redis) -> None:
    context = WorkerContext(config, redis)
    first = backend_pid(context)
    assert backend_pid(context) == first
    assert config.database_url
    admin = psycopg2.connect(config.database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (first,))
    admin.close()
    assert backend_pid(context) != first
    context.close()


def test_a_forked_child_opens_its_own_connection(config: Config, redis: Redis) -> None:
    context = WorkerContext(config, redis)
    parent = backend_pid(context)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, str(backend_pid(context)).encode())
            context.close()
        finally:
            os._exit(0)
    os.close(write)
    child_pid = int(os.read(read, 32))
    os.waitpid(child, 0)
    assert child_pid != parent
    assert backend_pid(context) == parent  # the child did not close the parent's connection
    context.close()


def context_of_job(context: WorkerContext, tag: str) -> str:
    return f"{tag}: {type(context).__name__} {context.config.max_attempts}"


def test_jobs_receive_the_workers_context(config: Config, redis: Redis) -> None:
    queue = Queue("falback-maintenance", connection=redis)
    job = queue.enqueue(context_of_job, "t")
    worker = make_worker(config, redis, [queue], fork=False)
    worker.work(burst=True)
    assert job.return_value(refresh=True) == f"t: WorkerContext {config.max_attempts}"


def test_a_job_run_outside_a_falback_worker_says_so(redis: Redis) -> None:
    job = ContextJob.create(context_of_job, args=("t",), connection=redis)
    with pytest.raises(RuntimeError, match="outside a falback worker"):
        job.perform()

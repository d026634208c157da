"""Defects the chaos run (bench/chaos.py) found, each pinned by a test of its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from jobs.destinations.base import StoredFile
from jobs.destinations.local import LocalUpload
from jobs.queues import QUEUE_FOR_KIND, job_id
from jobs.sweep import sweep
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_image, ledger_rows
from tests.support.workers import run_worker


def test_postgres_lost_between_the_copy_and_its_record_leaves_no_lease_to_expire(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in the chaos run (seed 312): Postgres restarted after a copy was verified in
    Drive and before the job recorded it. The job's `_settle` then fails to record a retry
    too (the connection is gone), so the row stays 'copying' until its lease runs out:
    FALBACK_JOB_TIMEOUT + 60 s, an hour by default. The copy is safe (the next attempt
    finds it), but the file waits an hour. The job could reconnect and record the outcome
    (or at least hand the row back) once Postgres answers again."""
    add_image(conn, cdn, 1)
    backfill(config, conn, redis, "images", 10)
    finish = LocalUpload.finish

    def finish_then_lose_postgres(self: LocalUpload, size: int, md5: str) -> StoredFile:
        stored = finish(self, size, md5)
        with conn.cursor() as cur:  # as a Postgres restart does to every session
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'falback-worker' AND datname = current_database()"
            )
        conn.commit()
        return stored

    monkeypatch.setattr(LocalUpload, "finish", finish_then_lose_postgres)
    run_worker(config, with_scheduler=False)
    conn.rollback()
    [row] = ledger_rows(conn)
    assert row["status"] != "copying" and row["lease_expires_at"] is None, row


def test_the_sweep_requeues_a_retry_whose_scheduled_job_is_long_overdue(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn
) -> None:
    """Seen in the chaos run (seed 312): the worker holding RQ's scheduler lock was killed
    -9; no scheduler ran, so a retry scheduled in RQ was never enqueued, and the sweep
    skipped its row because the job exists ('scheduled'). jobs/worker.py now takes the
    scheduler over within about 90 s, but with no scheduler at all (every worker down but
    one started without it) the sweep is the only backstop: a scheduled job overdue by
    far more than a sweep interval should count as lost."""
    add_image(conn, cdn, 1)
    backfill(config, conn, redis, "images", 10)
    [row] = ledger_rows(conn)
    queue = Queue(QUEUE_FOR_KIND["image"], connection=redis)
    job = Job.fetch(job_id(row["id"]), connection=redis)
    queue.remove(job)
    overdue = datetime.now(UTC) - timedelta(minutes=10)
    ScheduledJobRegistry(queue=queue).schedule(job, overdue)  # type: ignore[no-untyped-call]
    job.set_status(JobStatus.SCHEDULED)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ledger SET status = 'retrying', attempts = 1, next_attempt_at = %s WHERE id = %s",
            (overdue, row["id"]),
        )
    conn.commit()
    counts = sweep(config, conn, redis)
    assert counts is not None and counts.retrying_due == 1
    assert queue.get_job_ids() == [job_id(row["id"])]

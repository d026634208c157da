"""The RQ job that fetches a result fal could not put in its webhook (status OK, payload
null, ``payload_error``) from fal's queue API (jobs.fal.api.request_result), then hands its
files to the ledger like a webhook's (jobs.fal.record.record_result).

fal keeps a result one hour after the request completes, six minutes when it is 10 KB or
larger, so the job goes to the front of the highest-priority queue, and transient failures
are retried within that window. The delivery row stays unresolved, with a note saying
why, until the result is recorded; `falback status` counts such rows.
"""

from __future__ import annotations

import contextlib
import logging

from redis import Redis, RedisError
from rq import Queue, Retry, get_current_job
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from core.config import Config
from db import deliveries
from db.connection import Connection
from jobs.dispatch import top_up_for
from jobs.fal.api import FetchFailed, ResultUnavailable, request_result, unfetchable_reason
from jobs.fal.record import record_result
from jobs.queues import MAINTENANCE_QUEUE
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)

FETCH_FUNC = "jobs.fal_results.fetch_result"
RETRY_INTERVALS = [10, 30, 60, 120]  # inside the six minutes fal may keep a large result
# Served before every backup queue (a worker busy with copies still takes it next): the
# result expires soon, and the job is one small GET.
QUEUE = MAINTENANCE_QUEUE


def job_id(delivery_id: int) -> str:
    return f"fal-result-{delivery_id}"


def enqueue_fetch(redis: Redis, delivery_id: int, *, replace_ended: bool = True) -> bool:
    """Put the fetch job at the front of the queue unless it exists; True if added.

    With `replace_ended`, a job that already ended (a fetch that failed) is replaced: a
    redelivery from fal is the moment to try again, and RQ would refuse the id for as
    long as it keeps the job. The sweep passes False: it only replaces a lost job.
    """
    if replace_ended:
        with contextlib.suppress(NoSuchJobError):
            old = Job.fetch(job_id(delivery_id), connection=redis)
            if old.get_status(refresh=False) in (
                JobStatus.FINISHED,
                JobStatus.FAILED,
                JobStatus.STOPPED,
                JobStatus.CANCELED,
            ):
                old.delete()
    try:
        Queue(QUEUE, connection=redis).enqueue_call(
            FETCH_FUNC, args=(delivery_id,), job_id=job_id(delivery_id), unique=True,
            at_front=True, timeout=300, result_ttl=3600, failure_ttl=7 * 24 * 3600,
            retry=Retry(max=len(RETRY_INTERVALS), interval=RETRY_INTERVALS),
            description=f"fetch the fal result of delivery {delivery_id}",
        )  # fmt: skip
    except DuplicateJobError:
        return False
    return True


def fetch_result(context: WorkerContext, delivery_id: int) -> str:
    """The job: 'resolved', 'unresolved' (the note says why) or 'skipped' (nothing to do)."""
    conn = context.db()
    try:
        return _fetch(conn, context.redis, context.config, delivery_id)
    finally:
        conn.rollback()


def _fetch(conn: Connection, redis: Redis, config: Config, delivery_id: int) -> str:
    delivery = deliveries.get_delivery(conn, delivery_id)
    conn.commit()
    if delivery is None or delivery["resolved"]:
        return "skipped"
    request_id = delivery["request_id"]
    reason = unfetchable_reason(config, delivery["fal_app"])
    if reason:
        return _unresolved(conn, delivery_id, request_id, reason)
    try:
        result = request_result(config, delivery["fal_app"], request_id)
    except ResultUnavailable as e:
        return _unresolved(conn, delivery_id, request_id, f"result not fetched: {e}")
    except FetchFailed as e:
        job = get_current_job()
        final = job is None or not job.retries_left
        _unresolved(
            conn, delivery_id, request_id, f"result not fetched: {e}" + ("" if final else " (will retry)")
        )
        raise
    recorded = record_result(conn, config, delivery, result)
    if recorded is None:
        return "skipped"  # another run of this job recorded it first
    log.info(
        "delivery %d request %s: fetched result, %d file(s), ledger %s",
        delivery_id,
        request_id,
        recorded.files,
        [i for i, _ in recorded.rows],
    )
    try:
        top_up_for(conn, redis, config, recorded.rows)
    except RedisError as e:
        conn.rollback()
        log.warning(
            "delivery %d: redis unavailable (%s); ledger rows stay pending for the sweep",
            delivery_id,
            type(e).__name__,
        )
    return "resolved"


def _unresolved(conn: Connection, delivery_id: int, request_id: str, note: str) -> str:
    deliveries.set_note(conn, delivery_id, note)
    conn.commit()
    log.warning("delivery %d request %s: %s", delivery_id, request_id, note)
    return "unresolved"

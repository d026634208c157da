"""The RQ job that fetches a result fal could not put in its webhook (status OK, payload
null, ``payload_error``) from fal's queue API, then hands its files to the ledger like a
webhook's: ``GET {FAL_QUEUE_BASE_URL}/{owner}/{app}/requests/{request_id}`` with
``Authorization: Key {FAL_KEY}``.

fal keeps a result one hour after the request completes, six minutes when it is 10 KB or
larger, so the job goes to the front of the highest-priority queue, and transient failures
are retried within that window. The delivery row stays unresolved, with a note saying
why, until the result is recorded; `falback status` counts such rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
from urllib.parse import quote

import requests
from redis import Redis, RedisError
from rq import Queue, Retry, get_current_job
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

from core.config import Config
from db import deliveries
from db.connection import Connection, Row
from jobs.fal.payload import AppLink, find_media
from jobs.fal.plan import plan_files, record_files
from jobs.intake import enqueue_rows
from jobs.queues import MAINTENANCE_QUEUE
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)

FETCH_FUNC = "jobs.fal_results.fetch_result"
RETRY_INTERVALS = [10, 30, 60, 120]  # inside the six minutes fal may keep a large result
# Served before every backup queue (a worker busy with copies still takes it next): the
# result expires soon, and the job is one small GET.
QUEUE = MAINTENANCE_QUEUE


class FetchFailed(Exception):
    """Worth another try (timeout, 5xx, 429, still in progress); the message is safe to store."""


class ResultUnavailable(Exception):
    """Trying again cannot help (404, key refused, not JSON); the message is safe to store."""


def job_id(delivery_id: int) -> str:
    return f"fal-result-{delivery_id}"


def body_limit(config: Config) -> int:
    """Largest fal webhook body or queue result accepted: room for one data: URI at the
    configured cap (base64 is 4/3 of the bytes) plus 1 MiB of JSON."""
    return 1024 * 1024 + 4 * -(-config.max_data_uri_bytes // 3)


def unfetchable_reason(config: Config, fal_app: str | None) -> str | None:
    if not config.fal_key:
        return "result not fetched: FAL_KEY is not set (fal's queue API needs it)"
    if not fal_app:
        return ("result not fetched: the webhook URL has no fal_app parameter;"
                " add ?fal_app=<owner>/<app> (e.g. fal-ai/kling-video) to it")
    return None


def enqueue_fetch(redis: Redis, delivery_id: int, *, replace_ended: bool = True) -> bool:
    """Put the fetch job at the front of the queue unless it exists; True if added.

    With `replace_ended`, a job that already ended (a fetch that failed) is replaced: a
    redelivery from fal is the moment to try again, and RQ would refuse the id for as
    long as it keeps the job. The sweep passes False: it only replaces a lost job.
    """
    if replace_ended:
        with contextlib.suppress(NoSuchJobError):
            old = Job.fetch(job_id(delivery_id), connection=redis)
            if old.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED,
                                                 JobStatus.STOPPED, JobStatus.CANCELED):
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
        _unresolved(conn, delivery_id, request_id,
                    f"result not fetched: {e}" + ("" if final else " (will retry)"))
        raise
    scan = find_media(result, root="result", max_data_bytes=config.max_data_uri_bytes)
    plan = plan_files(scan.media, scan.problems, request_id=request_id,
                      link=_link(delivery), fal_app=delivery["fal_app"])
    if not deliveries.resolve(conn, delivery_id, len(plan.files), plan.note()):
        conn.rollback()
        return "skipped"  # another run of this job recorded it first
    rows = record_files(conn, plan, config.expiry_days)
    conn.commit()
    log.info("delivery %d request %s: fetched result, %d file(s), ledger %s",
             delivery_id, request_id, len(plan.files), [i for i, _ in rows])
    try:
        enqueue_rows(conn, redis, config, rows)
    except RedisError as e:
        conn.rollback()
        log.warning("delivery %d: redis unavailable (%s); ledger rows stay pending for the sweep",
                    delivery_id, type(e).__name__)
    return "resolved"


def request_result(config: Config, fal_app: str, request_id: str) -> object:
    """GET the result from fal's queue API; raise FetchFailed or ResultUnavailable."""
    # Result URLs take owner/app only, never the endpoint path (fal's queue API docs).
    owner_app = "/".join(fal_app.split("/")[:2])
    url = f"{config.fal_queue_base_url}/{owner_app}/requests/{quote(request_id, safe='')}"
    session = requests.Session()
    session.max_redirects = 5  # requests drops Authorization on a redirect to another host
    try:
        with session.get(
            url, headers={"Authorization": f"Key {config.fal_key}", "Accept": "application/json"},
            timeout=(config.connect_timeout, config.read_timeout), stream=True,
        ) as response:
            status = response.status_code
            if status == 200:
                body = _read_capped(response, body_limit(config))
            elif status == 202:
                raise FetchFailed("fal says the request is still in progress (HTTP 202)")
            elif status == 429 or status >= 500:
                raise FetchFailed(f"fal's queue API answered HTTP {status}")
            elif status in (401, 403):
                raise ResultUnavailable(f"fal refused FAL_KEY (HTTP {status})")
            elif status == 404:
                raise ResultUnavailable("fal has no such result (HTTP 404): it expired, or fal_app is wrong")
            else:
                raise ResultUnavailable(f"fal's queue API answered HTTP {status}")
    except requests.RequestException as e:
        raise FetchFailed(f"could not reach fal's queue API ({type(e).__name__})") from None
    finally:
        session.close()
    if body is None:
        raise ResultUnavailable(f"the result is larger than {body_limit(config)} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ResultUnavailable("the result is not JSON") from None


def _read_capped(response: requests.Response, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _unresolved(conn: Connection, delivery_id: int, request_id: str, note: str) -> str:
    deliveries.set_note(conn, delivery_id, note)
    conn.commit()
    log.warning("delivery %d request %s: %s", delivery_id, request_id, note)
    return "unresolved"


def _link(delivery: Row) -> AppLink | None:
    if not delivery["source_table"]:
        return None
    return AppLink(delivery["source_table"], int(delivery["source_id"]), delivery["variant"])

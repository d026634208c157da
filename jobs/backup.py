"""The RQ job: back up one ledger row.

claim (conditional UPDATE) -> stream source -> destination -> verify -> record, with the
app row's backup_* columns updated in the same transaction as the ledger. Transient
errors are retried with backoff: the ledger's next_attempt_at is the one clock, and the
job hands RQ a Retry for exactly that moment (the ledger's attempts being the bound).
Permanent ones end the row as 'failed' or 'gone' with a readable reason.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

from rq import Retry, get_current_job

from core.config import Config
from db import app_rows, blobs, drive_state, ledger
from db.connection import Connection
from jobs.blob_source import BLOB_PREFIX, is_blob_url
from jobs.destinations import from_config
from jobs.destinations.base import Destination
from jobs.errors import CopyError, DestinationPaused, PermanentError, SourceGone
from jobs.fetch import SourceFetcher, loggable_url
from jobs.transfer import copy_file
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)

class _Ids(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        return f"ledger {self.extra['ledger_id']} job {self.extra['job_id']}: {msg}", kwargs


# RQ counts the Retry objects a job returns and fails it past `max`; the ledger's own
# attempts are the real bound (a pause spends none), so RQ's is set out of reach.
_RESCHEDULES = 1_000_000


def backup_file(context: WorkerContext, ledger_id: int) -> str | Retry:
    """Back up one ledger row; return the row's status afterwards ('skipped' if not ours),
    or a Retry for the moment the ledger says the row is due again (a transient error, or
    the destination paused, which spends no attempt)."""
    config = context.config
    job = get_current_job()
    job_name = job.id if job else "-"
    logger = _Ids(log, {"ledger_id": ledger_id, "job_id": job_name})
    owner = f"{socket.gethostname()}:{os.getpid()}:{job_name}"
    conn = context.db()
    try:
        destination = from_config(config, conn)
        paused = drive_state.paused_until(conn, destination.name)
        conn.commit()
        if paused is not None:
            logger.info("%s uploads are paused until %s; rescheduled", destination.name, paused)
            return _later(paused)
        # The lease outlives the job's own timeout (set when it was enqueued, perhaps under
        # another configuration), so a live attempt never loses its row to a sweep.
        timeout = job.timeout if job and job.timeout else config.job_timeout_seconds
        row = ledger.claim(conn, ledger_id, owner, int(timeout) + 60)
        if row is None:
            conn.commit()
            logger.info("not claimable (finished, or another worker holds it)")
            return "skipped"
        app_rows.sync_app_row(conn, row.source_table, row.source_id)
        conn.commit()
        logger.info("claimed, attempt %d of %d: %s", row.attempts, config.max_attempts,
                    loggable_url(row.source_url))
        return _attempt(conn, config, row, destination, logger)
    finally:
        conn.rollback()  # the connection stays open for the next job; nothing left pending


def _attempt(conn: Connection, config: Config, row: ledger.LedgerRow, destination: Destination,
             logger: _Ids) -> str | Retry:
    fetcher = SourceFetcher(config)
    try:
        stored = copy_file(row, fetcher, destination)
    except DestinationPaused as e:
        return _pause(conn, row, destination.name, e, logger)
    except SourceGone as e:
        return _finish(conn, row, "gone", str(e), logger)
    except PermanentError as e:
        return _finish(conn, row, "failed", str(e), logger)
    except Exception as e:
        message = str(e) or type(e).__name__
        if row.attempts >= config.max_attempts:
            return _finish(conn, row, "failed",
                           f"gave up after {row.attempts} attempts: {message}", logger)
        conn.rollback()
        delay = config.retry_intervals()[row.attempts - 1]
        # A source's Retry-After wins when it is longer.
        retry_after = getattr(e, "retry_after", None)
        if retry_after:
            delay = max(delay, math.ceil(retry_after))
        due = ledger.record_retry(conn, row.id, _owner(row), message, delay)
        if due is None:
            return _lost(conn, logger)
        app_rows.sync_app_row(conn, row.source_table, row.source_id)
        conn.commit()
        # A CopyError is classified and its message says it all; anything else is a bug
        # whose traceback is wanted.
        logger.warning("attempt %d failed, retrying in %ds: %s", row.attempts, delay, message,
                       exc_info=not isinstance(e, CopyError))
        return _later(due)
    finally:
        fetcher.close()
    if not ledger.record_done(
        conn, row.id, _owner(row), destination=stored.destination, destination_id=stored.id,
        destination_url=stored.url, size=stored.size, md5=stored.md5,
    ):
        return _lost(conn, logger)
    if is_blob_url(row.source_url):
        blobs.delete_blob(conn, row.source_url.removeprefix(BLOB_PREFIX))
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.info("done: %d bytes, md5 %s, at %s %s", stored.size, stored.md5,
                stored.destination, stored.id)
    return "done"


def _pause(conn: Connection, row: ledger.LedgerRow, destination: str, error: DestinationPaused,
           logger: _Ids) -> Retry:
    """Pause the destination for every job, and give this row its attempt back."""
    conn.rollback()
    drive_state.pause(conn, destination, error.until, str(error))
    ledger.record_paused(conn, row.id, _owner(row), str(error), error.until)
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("paused: %s", error)
    return _later(error.until)


def _owner(row: ledger.LedgerRow) -> str:
    assert row.claimed_by is not None, "rows reach a job only through claim()"
    return row.claimed_by


def _lost(conn: Connection, logger: _Ids) -> str:
    """The lease ran out mid-attempt and the row went to another attempt: this one's
    result is not recorded (the destination's own checks keep the copy single)."""
    conn.rollback()
    logger.error("lost the claim before recording the result (lease expired); left to the new owner")
    return "lost"


def _later(until: datetime) -> Retry:
    seconds = math.ceil((until - datetime.now(UTC)).total_seconds())
    return Retry(max=_RESCHEDULES, interval=max(seconds, 1))


def _finish(conn: Connection, row: ledger.LedgerRow, status: str, error: str, logger: _Ids) -> str:
    conn.rollback()
    if not ledger.record_final(conn, row.id, _owner(row), status, error):
        return _lost(conn, logger)
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("%s: %s", status, error)
    return status

"""The RQ job: back up one ledger row.

claim (conditional UPDATE) -> stream source -> destination -> verify -> record, with the
app row's backup_* columns updated in the same transaction as the ledger. Transient
errors are retried with backoff (RQ's Retry, the ledger's attempts being the bound);
permanent ones end the row as 'failed' or 'gone' with a readable reason.
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

from db import destinations, ledger, webhooks
from db.connection import Connection, connect
from falback.config import Config
from jobs.blobs import BLOB_PREFIX, is_blob_url
from jobs.copy import copy_file
from jobs.destinations import from_config
from jobs.destinations.base import Destination
from jobs.errors import DestinationPaused, PermanentError, SourceGone
from jobs.fetch import SourceFetcher, loggable_url

log = logging.getLogger(__name__)

# Read from the environment once per worker process (before RQ forks the work horse).
_config: Config | None = None


def configure(config: Config) -> None:
    global _config
    _config = config


def current_config() -> Config:
    global _config
    if _config is None:
        _config = Config.from_env()
    return _config


class _Ids(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        return f"ledger {self.extra['ledger_id']} job {self.extra['job_id']}: {msg}", kwargs


# A paused destination reschedules its jobs this many times at most (RQ counts returned
# Retry objects); a pause is hours long, so this is weeks of waiting, never reached.
_PAUSE_RESCHEDULES = 10_000


def backup_file(ledger_id: int) -> str | Retry:
    """Back up one ledger row; return the row's status afterwards ('skipped' if not ours),
    or a Retry for later when the destination is paused (no attempt is spent)."""
    config = current_config()
    assert config.database_url, "DATABASE_URL must be set for workers"
    job = get_current_job()
    job_name = job.id if job else "-"
    logger = _Ids(log, {"ledger_id": ledger_id, "job_id": job_name})
    owner = f"{socket.gethostname()}:{os.getpid()}:{job_name}"
    conn = connect(config.database_url, application_name="falback-worker")
    try:
        destination = from_config(config, conn)
        paused = destinations.paused_until(conn, destination.name)
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
        ledger.sync_app_row(conn, row.source_table, row.source_id)
        conn.commit()
        logger.info("claimed, attempt %d of %d: %s", row.attempts, config.max_attempts,
                    loggable_url(row.source_url))
        return _attempt(conn, config, row, destination, logger)
    finally:
        conn.close()


def _attempt(conn: Connection, config: Config, row: ledger.LedgerRow, destination: Destination,
             logger: _Ids) -> str | Retry:
    def save_state(session_uri: str | None, offset: int) -> None:
        ledger.save_upload_state(conn, row.id, _owner(row), session_uri, offset)
        conn.commit()

    fetcher = SourceFetcher(config)
    try:
        stored = copy_file(row, fetcher, destination, save_state)
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
        # A source's Retry-After wins; an RQ retry that comes earlier finds the row not
        # yet due and leaves it to the sweep.
        retry_after = getattr(e, "retry_after", None)
        if retry_after:
            delay = max(delay, math.ceil(retry_after))
        if not ledger.record_retry(conn, row.id, _owner(row), message, delay):
            return _lost(conn, logger)
        ledger.sync_app_row(conn, row.source_table, row.source_id)
        conn.commit()
        logger.warning("attempt %d failed, retrying in %ds: %s", row.attempts, delay, message)
        raise
    finally:
        fetcher.close()
    if not ledger.record_done(
        conn, row.id, _owner(row), destination=stored.destination, destination_id=stored.id,
        destination_url=stored.url, size=stored.size, md5=stored.md5,
    ):
        return _lost(conn, logger)
    if is_blob_url(row.source_url):
        webhooks.delete_blob(conn, row.source_url.removeprefix(BLOB_PREFIX))
    ledger.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.info("done: %d bytes, md5 %s, at %s %s", stored.size, stored.md5,
                stored.destination, stored.id)
    return "done"


def _pause(conn: Connection, row: ledger.LedgerRow, destination: str, error: DestinationPaused,
           logger: _Ids) -> Retry:
    """Pause the destination for every job, and give this row its attempt back."""
    conn.rollback()
    destinations.pause(conn, destination, error.until, str(error))
    ledger.record_paused(conn, row.id, _owner(row), str(error), error.until)
    ledger.sync_app_row(conn, row.source_table, row.source_id)
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
    return Retry(max=_PAUSE_RESCHEDULES, interval=max(seconds, 1))


def _finish(conn: Connection, row: ledger.LedgerRow, status: str, error: str, logger: _Ids) -> str:
    conn.rollback()
    if not ledger.record_final(conn, row.id, _owner(row), status, error):
        return _lost(conn, logger)
    ledger.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("%s: %s", status, error)
    return status

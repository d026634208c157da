"""The RQ job: back up one ledger row.

claim (conditional UPDATE) -> stream source -> destination -> verify -> record, with the
app row's backup_* columns updated in the same transaction as the ledger. Transient
errors are retried with backoff (RQ's Retry, the ledger's attempts being the bound);
permanent ones end the row as 'failed' or 'gone' with a readable reason.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from typing import Any

from rq import get_current_job

from db import ledger
from db.connection import Connection, connect
from falback.config import Config
from jobs.copy import copy_file
from jobs.destinations import from_config
from jobs.errors import PermanentError, SourceGone
from jobs.fetch import SourceFetcher

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


def backup_file(ledger_id: int) -> str:
    """Back up one ledger row; return the row's status afterwards ('skipped' if not ours)."""
    config = current_config()
    assert config.database_url, "DATABASE_URL must be set for workers"
    job = get_current_job()
    job_name = job.id if job else "-"
    logger = _Ids(log, {"ledger_id": ledger_id, "job_id": job_name})
    owner = f"{socket.gethostname()}:{os.getpid()}:{job_name}"
    conn = connect(config.database_url, application_name="falback-worker")
    try:
        row = ledger.claim(conn, ledger_id, owner, config.job_timeout_seconds + 60)
        if row is None:
            conn.commit()
            logger.info("not claimable (finished, or another worker holds it)")
            return "skipped"
        ledger.sync_app_row(conn, row.source_table, row.source_id)
        conn.commit()
        logger.info("claimed, attempt %d of %d: %s", row.attempts, config.max_attempts, row.source_url)
        return _attempt(conn, config, row, logger)
    finally:
        conn.close()


def _attempt(conn: Connection, config: Config, row: ledger.LedgerRow, logger: _Ids) -> str:
    def save_state(session_uri: str | None, offset: int) -> None:
        ledger.save_upload_state(conn, row.id, session_uri, offset)
        conn.commit()

    fetcher = SourceFetcher(config)
    try:
        stored = copy_file(row, fetcher, from_config(config), save_state)
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
        ledger.record_retry(conn, row.id, message, delay)
        ledger.sync_app_row(conn, row.source_table, row.source_id)
        conn.commit()
        logger.warning("attempt %d failed, retrying in %ds: %s", row.attempts, delay, message)
        raise
    finally:
        fetcher.close()
    ledger.record_done(
        conn, row.id, destination=stored.destination, destination_id=stored.id,
        destination_url=stored.url, size=stored.size, md5=stored.md5,
    )
    ledger.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.info("done: %d bytes, md5 %s, at %s %s", stored.size, stored.md5,
                stored.destination, stored.id)
    return "done"


def _finish(conn: Connection, row: ledger.LedgerRow, status: str, error: str, logger: _Ids) -> str:
    conn.rollback()
    ledger.record_final(conn, row.id, status, error)
    ledger.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("%s: %s", status, error)
    return status

"""How an attempt on a claimed ledger row ends, recorded (jobs/backup.py decides which).

done, retry (transient: 'retrying' with backoff, 'failed' once the attempts are spent),
missing (404/410: 'gone', or retried inside fal's window), pause (a destination refuses
uploads for now), final ('failed' or 'gone'). Each names the claim's owner: when the
lease ran out and another attempt took the row, nothing is recorded (`lost`). Each keeps
the app row's backup_* columns in step in the same transaction (in a savepoint: the
user's table refusing the write never undoes the outcome), and returns what the job
returns to RQ: the row's status, or a Retry for the moment the ledger says it is due.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from rq import Retry

from core.config import Config
from db import app_sync, attempts, copies, ledger
from db.connection import Connection
from jobs.blob_source import BLOB_PREFIX, is_blob_url
from jobs.errors import CopyError, SourceGone, VerifyError

Logger = logging.LoggerAdapter[logging.Logger]

# RQ counts the Retry objects a job returns and fails it past `max`; the ledger's own
# attempts are the real bound (a pause spends none), so RQ's is set out of reach.
_RESCHEDULES = 1_000_000
_MAX_MISSING_WAIT = 6 * 3600.0


def done(
    conn: Connection,
    config: Config,
    row: ledger.LedgerRow,
    logger: Logger,
    last: copies.NewCopy | None = None,
) -> str:
    """Every destination holds a copy (`last` the one still to record): the row done, in
    one statement, with the first configured destination's copy in its own columns."""
    blob = row.source_url.removeprefix(BLOB_PREFIX) if is_blob_url(row.source_url) else None
    result = attempts.record_done(conn, row.id, owner(row), config.destination_names, last=last, blob=blob)
    if result.copies == 0:  # every destination held a copy a moment ago: one was forgotten since
        raise VerifyError("no copy is recorded any more; copying again")
    if result.kept is None:
        return lost(conn, logger)
    if result.app_files:
        keep_app_row(conn, row, seen=True)
    conn.commit()
    kept = result.kept
    logger.info(
        "done: %d bytes, md5 %s, at %s %s (copies at %s)",
        kept.size,
        kept.md5,
        kept.destination,
        kept.location,
        ", ".join(config.destination_names),
    )
    return "done"


def retry(
    conn: Connection,
    config: Config,
    row: ledger.LedgerRow,
    error: BaseException,
    logger: Logger,
    *,
    message: str | None = None,
) -> str | Retry:
    """A transient error (or one nobody classified): 'retrying' with backoff, 'failed' once
    the attempts are spent."""
    message = message or str(error) or type(error).__name__
    if row.attempts >= config.max_attempts:
        return finish(conn, row, "failed", f"gave up after {row.attempts} attempts: {message}", logger)
    conn.rollback()
    delay = config.retry_intervals()[row.attempts - 1]
    # A source's Retry-After wins when it is longer.
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        delay = max(delay, math.ceil(retry_after))
    due = attempts.record_retry(conn, row.id, owner(row), message, delay)
    if due is None:
        return lost(conn, logger)
    keep_app_row(conn, row)
    conn.commit()
    # A CopyError is classified and its message says it all; anything else is a bug
    # whose traceback is wanted.
    logger.warning(
        "attempt %d failed, retrying in %ds: %s",
        row.attempts,
        delay,
        message,
        exc_info=None if isinstance(error, CopyError) else error,
    )
    return later(due)


def missing(
    conn: Connection, config: Config, row: ledger.LedgerRow, error: SourceGone, logger: Logger
) -> str | Retry:
    """The source answered 404/410. After the file's guaranteed window (expires_at) that is
    its expiry: 'gone'. Inside it, fal still promises the file, so the answer is an anomaly
    (a CDN hiccup, a file not yet everywhere): retried with backoff, spending no attempt,
    for FALBACK_MISSING_RETRY_SECONDS from the first such answer; 'gone' once that time or
    the window is over."""
    conn.rollback()
    seen = attempts.mark_missing(conn, row.id, owner(row))
    if seen is None:
        return lost(conn, logger)
    since, now = seen
    if row.expires_at is None or now >= row.expires_at:
        return gone(conn, config, row, str(error), logger)
    deadline = min(row.expires_at, since + timedelta(seconds=config.missing_retry_seconds))
    if now >= deadline:
        return gone(
            conn,
            config,
            row,
            f"{error}; still missing after {_span(now - since)},"
            f" with fal's window open until {row.expires_at:%Y-%m-%d %H:%M} UTC",
            logger,
        )
    # Each wait as long as the file has been missing so far (doubling), never past the deadline.
    elapsed = (now - since).total_seconds()
    left = (deadline - now).total_seconds()
    delay = max(min(max(config.retry_base_seconds, elapsed), left, _MAX_MISSING_WAIT), 1.0)
    message = (
        f"{error}, before fal's window ends ({row.expires_at:%Y-%m-%d %H:%M} UTC):"
        f" retrying until {deadline:%Y-%m-%d %H:%M:%S} UTC"
    )
    due = attempts.record_retry(conn, row.id, owner(row), message, delay, refund_attempt=True)
    if due is None:
        return lost(conn, logger)
    keep_app_row(conn, row)
    conn.commit()
    logger.warning("missing, retrying in %ds: %s", math.ceil(delay), message)
    return later(due)


def gone(conn: Connection, config: Config, row: ledger.LedgerRow, error: str, logger: Logger) -> str:
    """The source is gone for good. A file some destination already holds (another
    destination failed first) is kept as done with that copy: 'gone' would hide it."""
    if copies.of_file(conn, row.id):
        logger.warning("the source is gone; done with the copies already made: %s", error)
        return done(conn, config, row, logger)
    return final(conn, row, "gone", error, logger)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"


def pause(conn: Connection, row: ledger.LedgerRow, until: datetime, reason: str, logger: Logger) -> Retry:
    """A destination still to copy to is paused (its pause already recorded for every
    job): the row waits for it, and gets this attempt back."""
    conn.rollback()
    attempts.record_paused(conn, row.id, owner(row), reason, until)
    keep_app_row(conn, row)
    conn.commit()
    logger.warning("waiting for a paused destination until %s: %s", until, reason)
    return later(until)


def keep_app_row(conn: Connection, row: ledger.LedgerRow, *, seen: bool = False) -> None:
    """The row's app row brought up to date in the caller's transaction, never undoing
    it (app_sync.sync_guarded)."""
    app_sync.sync_guarded(conn, [(row.source_table, row.source_id)], seen=seen)


def owner(row: ledger.LedgerRow) -> str:
    assert row.claimed_by is not None, "rows reach a job only through claim()"
    return row.claimed_by


def lost(conn: Connection, logger: Logger) -> str:
    """The lease ran out mid-attempt and the row went to another attempt: this one's
    result is not recorded (the destination's own checks keep the copy single)."""
    conn.rollback()
    logger.error("lost the claim before recording the result (lease expired); left to the new owner")
    return "lost"


def later(until: datetime) -> Retry:
    seconds = math.ceil((until - datetime.now(UTC)).total_seconds())
    return Retry(max=_RESCHEDULES, interval=max(seconds, 1))


def finish(conn: Connection, row: ledger.LedgerRow, status: str, error: str, logger: Logger) -> str:
    conn.rollback()  # whatever the failed attempt left in the transaction
    return final(conn, row, status, error, logger)


def final(conn: Connection, row: ledger.LedgerRow, status: str, error: str, logger: Logger) -> str:
    if not attempts.record_final(conn, row.id, owner(row), status, error):
        return lost(conn, logger)
    keep_app_row(conn, row)
    conn.commit()
    logger.warning("%s: %s", status, error)
    return status

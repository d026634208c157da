"""The RQ job: back up one ledger row.

claim (conditional UPDATE) -> for each configured destination still without a copy:
stream source -> destination -> verify -> record the copy (jobs/every_destination.py) ->
once none is missing, the ledger row done, with the app row's backup_* columns updated in
the same transaction. Transient errors are retried with backoff: the ledger's
next_attempt_at is the one clock, and the job hands RQ a Retry for exactly that moment
(the ledger's attempts being the bound).
Permanent ones end the row as 'failed' or 'gone' with a readable reason. Whatever is
raised after the claim ends in one of those outcomes (`_settle`).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Retry, get_current_job

from core.config import Config
from db import app_rows, blobs, copies, drive_state, ledger
from db.connection import Connection
from jobs import every_destination
from jobs.blob_source import BLOB_PREFIX, is_blob_url
from jobs.errors import CopyError, SourceGone, VerifyError
from jobs.fetch import loggable_url
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)


class _Ids(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}  # fields of a JSON line
        return f"ledger {self.extra['ledger_id']} job {self.extra['job_id']}: {msg}", kwargs


# RQ counts the Retry objects a job returns and fails it past `max`; the ledger's own
# attempts are the real bound (a pause spends none), so RQ's is set out of reach.
_RESCHEDULES = 1_000_000


def backup_file(context: WorkerContext, ledger_id: int) -> str | Retry:
    """Back up one ledger row; return the row's status afterwards ('skipped' if not ours),
    or a Retry for the moment the ledger says the row is due again (a transient error, a
    source missing inside fal's window, or the destination paused)."""
    config = context.config
    job = get_current_job()
    job_name = job.id if job else "-"
    logger = _Ids(log, {"ledger_id": ledger_id, "job_id": job_name})
    owner = f"{socket.gethostname()}:{os.getpid()}:{job_name}"
    conn = context.db()
    try:
        names = config.destination_names
        waiting = copies.missing(conn, ledger_id, names)
        paused = every_destination.pauses(conn, waiting)
        conn.commit()
        if waiting and len(paused) == len(waiting):
            # Every copy still to make is at a paused destination: not even a claim.
            until = min(paused.values())
            logger.info("%s paused until %s; rescheduled", " and ".join(paused), until)
            return _later(until)
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
        return _settle(conn, config, row, logger)
    finally:
        conn.rollback()  # the connection stays open for the next job; nothing left pending


def _settle(conn: Connection, config: Config, row: ledger.LedgerRow, logger: _Ids) -> str | Retry:
    """Run the attempt on a claimed row and record its outcome.

    Everything after the claim happens inside this one try, so whatever it raises ends as
    a recorded outcome, classified: a row never sits in 'copying' until its lease runs
    out because of an exception. Only when recording itself fails (Postgres gone) is the
    lease, and the sweep, what recovers the row.
    """
    try:
        logger.info(
            "claimed, attempt %d of %d: %s", row.attempts, config.max_attempts, loggable_url(row.source_url)
        )
        attempt = every_destination.copy_missing(conn, config, row, _owner(row), logger)
        return _outcome(conn, config, row, attempt, logger)
    except SourceGone as e:
        return _missing(conn, config, row, e, logger)
    except Exception as e:
        return _retry(conn, config, row, e, logger)
    except BaseException as e:
        # An interrupt or a shutdown (RQ's ShutDownImminentException): the attempt is
        # over; record it as a retry, then let the interruption go on.
        _retry(conn, config, row, e, logger)
        raise


def _outcome(
    conn: Connection, config: Config, row: ledger.LedgerRow, attempt: every_destination.Attempt, logger: _Ids
) -> str | Retry:
    """A permanent refusal anywhere fails the file; any other error retries it (the copies
    made stay made); a paused destination makes it wait, spending no attempt; done only
    once every destination holds a copy."""
    if attempt.lost:
        return _lost(conn, logger)
    several = len(config.destination_names) > 1

    def said(name: str, error: BaseException | str) -> str:
        message = error if isinstance(error, str) else str(error) or type(error).__name__
        return f"{name}: {message}" if several else message

    refused = attempt.permanent()
    if refused is not None:
        return _finish(conn, row, "failed", said(*refused), logger)
    if attempt.errors:
        name, error = attempt.errors[0]
        return _retry(conn, config, row, error, logger, message=said(name, error))
    if attempt.paused:
        name, until = min(attempt.paused.items(), key=lambda p: p[1])
        reason = drive_state.pause_reason(conn, name)
        return _pause(conn, row, until, said(name, reason[1] if reason else "paused"), logger)
    return _done(conn, config, row, logger)


def _done(conn: Connection, config: Config, row: ledger.LedgerRow, logger: _Ids) -> str:
    stored = every_destination.first_preference(conn, row.id, config.destination_names)
    if stored is None:  # every destination held a copy a moment ago: one was forgotten since
        raise VerifyError("no copy is recorded any more; copying again")
    if not ledger.record_done(
        conn,
        row.id,
        _owner(row),
        destination=stored.destination,
        destination_id=stored.location,
        destination_url=stored.url,
        size=stored.size_bytes,
        md5=stored.md5,
    ):
        return _lost(conn, logger)
    if is_blob_url(row.source_url):
        blobs.delete_blob(conn, row.source_url.removeprefix(BLOB_PREFIX))
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.info(
        "done: %d bytes, md5 %s, at %s %s (copies at %s)",
        stored.size_bytes,
        stored.md5,
        stored.destination,
        stored.location,
        ", ".join(config.destination_names),
    )
    return "done"


def _retry(
    conn: Connection,
    config: Config,
    row: ledger.LedgerRow,
    error: BaseException,
    logger: _Ids,
    *,
    message: str | None = None,
) -> str | Retry:
    """A transient error (or one nobody classified): 'retrying' with backoff, 'failed' once
    the attempts are spent."""
    message = message or str(error) or type(error).__name__
    if row.attempts >= config.max_attempts:
        return _finish(conn, row, "failed", f"gave up after {row.attempts} attempts: {message}", logger)
    conn.rollback()
    delay = config.retry_intervals()[row.attempts - 1]
    # A source's Retry-After wins when it is longer.
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        delay = max(delay, math.ceil(retry_after))
    due = ledger.record_retry(conn, row.id, _owner(row), message, delay)
    if due is None:
        return _lost(conn, logger)
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
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
    return _later(due)


def _missing(
    conn: Connection, config: Config, row: ledger.LedgerRow, error: SourceGone, logger: _Ids
) -> str | Retry:
    """The source answered 404/410. After the file's guaranteed window (expires_at) that is
    its expiry: 'gone'. Inside it, fal still promises the file, so the answer is an anomaly
    (a CDN hiccup, a file not yet everywhere): retried with backoff, spending no attempt,
    for FALBACK_MISSING_RETRY_SECONDS from the first such answer; 'gone' once that time or
    the window is over."""
    conn.rollback()
    seen = ledger.mark_missing(conn, row.id, _owner(row))
    if seen is None:
        return _lost(conn, logger)
    since, now = seen
    if row.expires_at is None or now >= row.expires_at:
        return _gone(conn, config, row, str(error), logger)
    deadline = min(row.expires_at, since + timedelta(seconds=config.missing_retry_seconds))
    if now >= deadline:
        return _gone(
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
    due = ledger.record_retry(conn, row.id, _owner(row), message, delay, refund_attempt=True)
    if due is None:
        return _lost(conn, logger)
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("missing, retrying in %ds: %s", math.ceil(delay), message)
    return _later(due)


_MAX_MISSING_WAIT = 6 * 3600.0


def _gone(conn: Connection, config: Config, row: ledger.LedgerRow, error: str, logger: _Ids) -> str:
    """The source is gone for good. A file some destination already holds (another
    destination failed first) is kept as done with that copy: 'gone' would hide it."""
    if copies.of_file(conn, row.id):
        logger.warning("the source is gone; done with the copies already made: %s", error)
        return _done(conn, config, row, logger)
    return _final(conn, row, "gone", error, logger)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds}s"


def _pause(conn: Connection, row: ledger.LedgerRow, until: datetime, reason: str, logger: _Ids) -> Retry:
    """A destination still to copy to is paused (its pause already recorded for every
    job): the row waits for it, and gets this attempt back."""
    conn.rollback()
    ledger.record_paused(conn, row.id, _owner(row), reason, until)
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("waiting for a paused destination until %s: %s", until, reason)
    return _later(until)


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
    conn.rollback()  # whatever the failed attempt left in the transaction
    return _final(conn, row, status, error, logger)


def _final(conn: Connection, row: ledger.LedgerRow, status: str, error: str, logger: _Ids) -> str:
    if not ledger.record_final(conn, row.id, _owner(row), status, error):
        return _lost(conn, logger)
    app_rows.sync_app_row(conn, row.source_table, row.source_id)
    conn.commit()
    logger.warning("%s: %s", status, error)
    return status

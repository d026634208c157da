"""The RQ job: back up one ledger row.

claim (one conditional UPDATE that also says which configured destinations still lack a
copy, and which of them are paused) -> for each of those: stream source -> destination ->
verify -> record the copy (jobs/every_destination.py) -> once none is missing, the ledger
row done, the last copy recorded in the same statement, with the app row's backup_*
columns updated in the same transaction. Transient errors are retried with backoff: the
ledger's next_attempt_at is the one clock, and the job hands RQ a Retry for exactly that
moment (the ledger's attempts being the bound).
Permanent ones end the row as 'failed' or 'gone' with a readable reason. Whatever is
raised after the claim ends in one of those outcomes (`_settle`; jobs/outcomes.py records
them).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping
from typing import Any

import psycopg2
from rq import Retry, get_current_job

from core.config import Config
from db import attempts, drive_state, ledger
from db.connection import Connection
from jobs import every_destination, outcomes
from jobs.errors import SourceGone
from jobs.fetch import loggable_url
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)


class _Ids(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        assert self.extra is not None
        kwargs["extra"] = {**self.extra, **kwargs.get("extra", {})}  # fields of a JSON line
        return f"ledger {self.extra['ledger_id']} job {self.extra['job_id']}: {msg}", kwargs


# How long a job waits for Postgres to come back to record its outcome (a restart takes
# seconds; beyond this the claim's lease and the sweep recover the row).
_RECONNECT_SECONDS = 30.0


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
        # The lease outlives the job's own timeout (set when it was enqueued, perhaps under
        # another configuration), so a live attempt never loses its row to a sweep.
        timeout = job.timeout if job and job.timeout else config.job_timeout_seconds
        claim = attempts.claim_attempt(conn, ledger_id, owner, int(timeout) + 60, config.destination_names)
        row = claim.row
        if row is None:
            if claim.missing and len(claim.paused) == len(claim.missing):
                # Every copy still to make is at a paused destination: not even a claim.
                until = min(claim.paused.values())
                logger.info("%s paused until %s; rescheduled", " and ".join(claim.paused), until)
                return outcomes.later(until)
            logger.info("not claimable (finished, or another worker holds it)")
            return "skipped"
        if claim.app_files:  # the user's app shows the file being copied
            outcomes.keep_app_row(conn, row, seen=True)
        conn.commit()
        try:
            return _settle(conn, config, claim, logger)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            # Postgres went away mid-attempt (a restart), so the outcome could not be
            # recorded: once it answers again, record a retry rather than leave the row
            # leased for the whole job timeout.
            return _record_after_reconnect(context, config, row, e, logger)
    finally:
        if not conn.closed:
            conn.rollback()  # the connection stays open for the next job; nothing left pending


def _record_after_reconnect(
    context: WorkerContext, config: Config, row: ledger.LedgerRow, error: Exception, logger: _Ids
) -> str | Retry:
    deadline = time.monotonic() + _RECONNECT_SECONDS
    delay = 0.5
    while True:
        try:
            conn = context.db()  # a new connection when the old one broke
            return outcomes.retry(conn, config, row, error, logger)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if time.monotonic() + delay > deadline:
                logger.error("Postgres is still unreachable; the row's lease and the sweep recover it")
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _settle(conn: Connection, config: Config, claim: attempts.Claim, logger: _Ids) -> str | Retry:
    """Run the attempt on a claimed row and record its outcome.

    Everything after the claim happens inside this one try, so whatever it raises ends as
    a recorded outcome, classified: a row never sits in 'copying' until its lease runs
    out because of an exception. When recording itself fails (Postgres gone), the job
    records a retry once Postgres is back (`_record_after_reconnect`); only if it stays
    away are the lease and the sweep what recover the row.
    """
    row = claim.row
    assert row is not None
    try:
        logger.info(
            "claimed, attempt %d of %d: %s", row.attempts, config.max_attempts, loggable_url(row.source_url)
        )
        attempt = every_destination.copy_missing(conn, config, claim, outcomes.owner(row), logger)
        return _outcome(conn, config, row, attempt, logger)
    except SourceGone as e:
        return outcomes.missing(conn, config, row, e, logger)
    except Exception as e:
        return outcomes.retry(conn, config, row, e, logger)
    except BaseException as e:
        # An interrupt or a shutdown (RQ's ShutDownImminentException): the attempt is
        # over; record it as a retry, then let the interruption go on.
        outcomes.retry(conn, config, row, e, logger)
        raise


def _outcome(
    conn: Connection, config: Config, row: ledger.LedgerRow, attempt: every_destination.Attempt, logger: _Ids
) -> str | Retry:
    """A permanent refusal anywhere fails the file; any other error retries it (the copies
    made stay made); a paused destination makes it wait, spending no attempt; done only
    once every destination holds a copy."""
    if attempt.lost:
        return outcomes.lost(conn, logger)
    several = len(config.destination_names) > 1

    def said(name: str, error: BaseException | str) -> str:
        message = error if isinstance(error, str) else str(error) or type(error).__name__
        return f"{name}: {message}" if several else message

    refused = attempt.permanent()
    if refused is not None:
        return outcomes.finish(conn, row, "failed", said(*refused), logger)
    if attempt.errors:
        name, error = attempt.errors[0]
        return outcomes.retry(conn, config, row, error, logger, message=said(name, error))
    if attempt.paused:
        name, until = min(attempt.paused.items(), key=lambda p: p[1])
        reason = drive_state.pause_reason(conn, name)
        return outcomes.pause(conn, row, until, said(name, reason[1] if reason else "paused"), logger)
    return outcomes.done(conn, config, row, logger, attempt.last)

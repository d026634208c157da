"""One attempt at a claimed file: a copy at every configured destination that does not
hold one yet (FALBACK_DESTINATIONS, first preference first).

Each copy is recorded (db/copies.py) and committed the moment it is verified, so a
failure at one destination is retried later without redoing the others; the last one,
when every other destination holds a copy already, is left to the statement that marks
the file done (jobs/outcomes.py `done`), which records it. A paused
destination (Drive's daily cap, an expired sign-in) is skipped and does not stop the
others. Each destination reads the source again: nothing is kept between two uploads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from rq.timeouts import BaseTimeoutException

from core.config import Config
from core.logs import redact
from db import attempts, copies, drive_state
from db.connection import Connection
from jobs.destinations import named
from jobs.errors import DestinationPaused, PermanentError, SourceGone
from jobs.fetch import SourceFetcher
from jobs.transfer import copy_file


@dataclass
class Attempt:
    """What one attempt achieved, destination by destination."""

    paused: dict[str, datetime] = field(default_factory=dict)  # destination -> until
    # Destination and what it raised, in the order tried.
    errors: list[tuple[str, Exception]] = field(default_factory=list)
    lost: bool = False  # the claim ran out: nothing more may be recorded
    # The last copy, verified but not recorded yet: every other destination holds one, so
    # it is recorded along with the file's done (one statement instead of two).
    last: copies.NewCopy | None = None

    def permanent(self) -> tuple[str, Exception] | None:
        return next(((n, e) for n, e in self.errors if isinstance(e, PermanentError)), None)


def copy_missing(
    conn: Connection,
    config: Config,
    claim: attempts.Claim,
    owner: str,
    logger: logging.LoggerAdapter,  # type: ignore[type-arg]
) -> Attempt:
    """Copy the claimed row (claimed by `owner`) to each configured destination that held
    no copy at the claim, except those paused then.

    A source answering 404/410 (SourceGone) ends the attempt at once: no destination can
    get the file then; so does the job's timeout. Anything else one destination raises is
    kept in `errors` and the next destination is tried; an interruption (BaseException)
    goes up as it is.
    """
    row = claim.row
    assert row is not None
    todo = claim.missing
    attempt = Attempt(paused=dict(claim.paused))
    fetcher = SourceFetcher(config)
    try:
        for name in todo:
            if name in attempt.paused:
                logger.info("%s is paused until %s: its copy waits", name, attempt.paused[name])
                continue
            try:
                stored = copy_file(row, fetcher, named(config, conn, name))
            except DestinationPaused as e:
                conn.rollback()
                drive_state.pause(conn, name, e.until, redact(str(e)))
                conn.commit()
                logger.warning("paused: %s", e)
                attempt.paused[name] = e.until
                continue
            except (SourceGone, BaseTimeoutException):
                raise  # no destination can get the file now, or the job's time is up
            except Exception as e:
                conn.rollback()
                attempt.errors.append((name, e))
                continue
            copy = copies.NewCopy(stored.destination, stored.id, stored.url, stored.size, stored.md5)
            logger.info("copy verified at %s: %s (%d bytes)", name, stored.id, stored.size)
            if name == todo[-1] and not attempt.errors and not attempt.paused:
                attempt.last = copy  # the file is done: recorded with it
            elif attempts.record_copy(conn, row.id, owner, copy):
                conn.commit()
            else:
                conn.rollback()
                attempt.lost = True
                return attempt
    finally:
        fetcher.close()
    return attempt

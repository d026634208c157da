"""One attempt at a claimed file: a copy at every configured destination that does not
hold one yet (FALBACK_DESTINATIONS, first preference first).

Each copy is recorded (db/copies.py) and committed the moment it is verified, so a
failure at one destination is retried later without redoing the others. A paused
destination (Drive's daily cap, an expired sign-in) is skipped and does not stop the
others. Each destination reads the source again: nothing is kept between two uploads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rq.timeouts import BaseTimeoutException

from core.config import Config
from core.logs import redact
from db import copies, drive_state, ledger
from db.connection import Connection
from jobs.destinations import named
from jobs.errors import DestinationPaused, PermanentError, SourceGone
from jobs.fetch import SourceFetcher
from jobs.transfer import copy_file


@dataclass
class Attempt:
    """What one attempt achieved, destination by destination."""

    made: list[str] = field(default_factory=list)
    paused: dict[str, datetime] = field(default_factory=dict)  # destination -> until
    # Destination and what it raised, in the order tried.
    errors: list[tuple[str, Exception]] = field(default_factory=list)
    lost: bool = False  # the claim ran out: nothing more may be recorded

    def permanent(self) -> tuple[str, Exception] | None:
        return next(((n, e) for n, e in self.errors if isinstance(e, PermanentError)), None)


def pauses(conn: Connection, names: Sequence[str]) -> dict[str, datetime]:
    """The destinations among `names` that refuse uploads now, and until when."""
    found = {}
    for name in names:
        until = drive_state.paused_until(conn, name)
        if until is not None:
            found[name] = until
    return found


def copy_missing(
    conn: Connection,
    config: Config,
    row: ledger.LedgerRow,
    owner: str,
    logger: logging.LoggerAdapter,  # type: ignore[type-arg]
) -> Attempt:
    """Copy `row` (claimed by `owner`) to each configured destination that holds no copy.

    A source answering 404/410 (SourceGone) ends the attempt at once: no destination can
    get the file then; so does the job's timeout. Anything else one destination raises is
    kept in `errors` and the next destination is tried; an interruption (BaseException)
    goes up as it is.
    """
    attempt = Attempt()
    todo = copies.missing(conn, row.id, config.destination_names)
    attempt.paused = pauses(conn, todo)
    conn.commit()
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
            if not ledger.record_copy(
                conn,
                row.id,
                owner,
                destination=stored.destination,
                location=stored.id,
                url=stored.url,
                size=stored.size,
                md5=stored.md5,
            ):
                conn.rollback()
                attempt.lost = True
                return attempt
            conn.commit()
            attempt.made.append(name)
            logger.info("copy verified at %s: %s (%d bytes)", name, stored.id, stored.size)
    finally:
        fetcher.close()
    return attempt


def first_preference(conn: Connection, ledger_id: int, names: Sequence[str]) -> copies.Copy | None:
    """The copy the ledger's own destination columns keep: the first configured
    destination's, else (a destination since dropped from the list) any."""
    held = copies.of_file(conn, ledger_id)
    rank = {name: n for n, name in enumerate(names)}
    held.sort(key=lambda c: rank.get(c.destination, len(rank)))
    return held[0] if held else None

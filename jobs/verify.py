"""`falback verify`: check every recorded copy (or a random sample) where it is kept:
that it exists, has its size and its MD5. A good copy gets `verified_at`; a missing or
wrong one is removed at its destination (so the backup's own `find()` cannot accept it
again), its `copies` row forgotten, and the file's ledger row put back to 'pending' and
enqueued: the backup job then copies it again (to the destinations missing a copy).

Reading a copy back costs what the destination charges: Drive answers size and MD5 from
its metadata; the local folder and S3 are read whole (S3 keeps no whole-file MD5).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis, RedisError

from core.config import Config
from core.logs import redact
from db import app_sync, copies, recovery
from db.connection import Connection
from db.recovery import FileCopy
from jobs.destinations.readback import CopyReader
from jobs.destinations.readers import usable_readers
from jobs.dispatch import top_up_for
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    ledger_id: int
    destination: str
    outcome: str  # 'missing', 'wrong' or 'error' (could not be checked)
    reason: str


@dataclass
class Tally:
    checked: int = 0
    ok: int = 0
    missing: int = 0
    wrong: int = 0
    errors: int = 0

    def count(self, outcome: str) -> None:
        if outcome == "missing":
            self.missing += 1
        elif outcome == "wrong":
            self.wrong += 1
        else:
            self.errors += 1


@dataclass
class VerifyReport:
    tallies: dict[str, Tally] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    # Destinations holding copies: not configured (left out), or configured but not
    # answering as the one the copies went to (nothing checked there): name -> why.
    unconfigured: dict[str, str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems and not self.unreachable

    def as_dict(self) -> dict[str, Any]:
        return {
            "tallies": {name: vars(t) for name, t in self.tallies.items()},
            "problems": [vars(p) for p in self.problems],
            "requeued": self.requeued,
            "unconfigured": self.unconfigured,
            "unreachable": self.unreachable,
        }


Progress = Callable[[int, int], None]
_LOG_EVERY = 500


def verify(
    config: Config,
    conn: Connection,
    redis: Redis,
    *,
    destination: str | None = None,
    sample: int | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Check the copies (at `destination`, else everywhere), re-queue the bad ones.

    A ValueError when the `destination` asked for is not configured. A copy that could
    not be checked (the destination did not answer) is reported as an error and left alone.
    """
    report = VerifyReport()
    names = [destination] if destination else recovery.destinations_holding(conn)
    conn.commit()
    readers = usable_readers(
        config,
        conn,
        names,
        asked=destination is not None,
        unconfigured=report.unconfigured,
        unreachable=report.unreachable,
    )
    try:
        work = recovery.copies_to_verify(conn, list(readers), sample)
        conn.commit()
        bad: list[FileCopy] = []
        for n, item in enumerate(work, 1):
            problem = _check(readers[item.copy.destination], item)
            tally = report.tallies.setdefault(item.copy.destination, Tally())
            tally.checked += 1
            if problem is None:
                tally.ok += 1
                copies.mark_verified(conn, item.copy.ledger_id, item.copy.destination)
                conn.commit()
            else:
                tally.count(problem.outcome)
                report.problems.append(problem)
                log.warning(
                    "ledger %d: %s copy %s: %s",
                    problem.ledger_id,
                    problem.destination,
                    problem.outcome,
                    problem.reason,
                )
                if problem.outcome != "error":
                    bad.append(item)
            if progress:
                progress(n, len(work))
        report.requeued = _requeue(config, conn, redis, readers, bad)
    finally:
        conn.rollback()
        for r in readers.values():
            r.close()
    return report


def _check(reader_: CopyReader, item: FileCopy) -> Problem | None:
    copy = item.copy
    try:
        found = reader_.inspect(copy)
    except Exception as e:
        return Problem(copy.ledger_id, copy.destination, "error", redact(str(e) or type(e).__name__))
    if found is None:
        return Problem(copy.ledger_id, copy.destination, "missing", f"no copy at {copy.location}")
    if (found.size, found.md5) != (copy.size_bytes, copy.md5):
        return Problem(
            copy.ledger_id,
            copy.destination,
            "wrong",
            f"{found.size} bytes md5 {found.md5 or '-'}, expected {copy.size_bytes} bytes md5 {copy.md5}",
        )
    return None


def _requeue(
    config: Config, conn: Connection, redis: Redis, readers: dict[str, CopyReader], bad: Sequence[FileCopy]
) -> list[int]:
    """Remove the bad copies, forget them, reopen their files and enqueue them."""
    ids: list[int] = []
    for item in bad:
        copy = item.copy
        try:
            readers[copy.destination].remove(copy)
        except Exception as e:
            # Left as it is, recorded and not re-queued: the local folder's find() takes
            # whatever file is at the path, so a copy job now would accept the bad one.
            log.warning(
                "ledger %d: could not remove the bad %s copy %s, not re-queued: %s",
                copy.ledger_id,
                copy.destination,
                copy.location,
                redact(str(e) or type(e).__name__),
            )
            continue
        copies.forget(conn, copy.ledger_id, copy.destination)
        conn.commit()
        if copy.ledger_id not in ids:
            ids.append(copy.ledger_id)
    if not ids:
        return []
    reopened = recovery.reopen(conn, ids, "falback verify found a copy missing or wrong; copying it again")
    app_sync.sync_app_rows(conn, [(r["source_table"], r["source_id"]) for r in reopened])
    conn.commit()
    items = sorted((int(r["id"]), str(r["kind"])) for r in reopened)
    # Back in the backlog; the top-up replaces a finished job of an earlier copy, whose id
    # would otherwise block the new one (with Redis away, the sweep's top-up does).
    try:
        top_up_for(conn, redis, config, items)
    except RedisError as e:
        conn.rollback()
        log.warning("verify: redis unavailable (%s); the reopened files wait in the backlog", e)
    log.info("verify: ledger %s back in the backlog", ", ".join(str(i) for i, _ in items) or "none")
    return [i for i, _ in items]


def scheduled_verify(context: WorkerContext) -> dict[str, Any]:
    """The weekly check (FALBACK_VERIFY_SCHEDULE) as a job on the verify queue."""
    conn = context.db()

    def progress(done: int, total: int) -> None:
        if done % _LOG_EVERY == 0:
            log.info("scheduled verify: %d of %d copies checked", done, total)

    try:
        report = verify(context.config, conn, context.redis, progress=progress)
    finally:
        conn.rollback()
    totals = Tally()
    for t in report.tallies.values():
        for f in vars(totals):
            setattr(totals, f, getattr(totals, f) + getattr(t, f))
    log.log(
        logging.INFO if report.clean else logging.WARNING,
        "scheduled verify: %d checked, %d ok, %d missing, %d wrong, %d not checkable; re-queued %d",
        totals.checked,
        totals.ok,
        totals.missing,
        totals.wrong,
        totals.errors,
        len(report.requeued),
    )
    return report.as_dict()

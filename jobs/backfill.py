"""Backfill: put files that already exist in the app tables in the backlog.

The ledger is the backlog: one INSERT ... SELECT creates a 'pending' row for each app
file that has none (at most `limit`, most valuable and oldest first), and a top-up
(jobs/dispatch.py) starts as many as the queues' windows hold; workers take the rest,
upscaled videos first, then regular videos, then images, each closest to expiry first.
Redis sees a window's worth of jobs however large the backlog. Running it twice adds
nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis import Redis

from core.config import Config
from core.kinds import BACKFILL_TYPES
from db import app_rows, app_sync
from db.connection import Connection
from jobs.dispatch import top_up


class BackfillError(ValueError):
    """Bad input or nothing to back up from; the message says which."""


@dataclass
class BackfillSummary:
    type: str
    limit: int
    dry_run: bool
    new_ledger_rows: int = 0
    files: int = 0  # added to the backlog by this call (the new ledger rows)
    dispatched: int = 0  # of the backlog, put on the queues at once
    bytes: int = 0
    per_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.type, "limit": self.limit, "dry_run": self.dry_run,
            "new_ledger_rows": self.new_ledger_rows, "files": self.files,
            "dispatched": self.dispatched,
            "bytes": self.bytes, "per_kind": self.per_kind,
        }  # fmt: skip


def validate(config: Config, type_: object, limit: object) -> tuple[str, int]:
    if type_ not in BACKFILL_TYPES:
        raise BackfillError(f"type must be one of {', '.join(BACKFILL_TYPES)}; got {type_!r}")
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise BackfillError(f"limit must be a whole number; got {limit!r}")
    if not 1 <= limit <= config.max_backfill_limit:
        raise BackfillError(f"limit must be between 1 and {config.max_backfill_limit}; got {limit}")
    return str(type_), limit


def backfill(
    config: Config,
    conn: Connection,
    redis: Redis,
    type_: str,
    limit: int,
    *,
    dry_run: bool = False,
) -> BackfillSummary:
    kinds = BACKFILL_TYPES[type_]
    if not app_sync.app_files_exist(conn):
        raise BackfillError(
            "no app tables found (gen_videos / gen_images); run `falback migrate` after they exist"
        )
    summary = BackfillSummary(type_, limit, dry_run)
    per_kind = app_rows.backfill_from_app(conn, kinds, limit, config.expiry_days)
    summary.per_kind = {kind: {"files": files, "bytes": size} for kind, (files, size) in per_kind.items()}
    summary.files = summary.new_ledger_rows = sum(files for files, _ in per_kind.values())
    summary.bytes = sum(size for _, size in per_kind.values())
    if dry_run:
        conn.rollback()
        return summary
    conn.commit()  # the backlog is safe before Redis is asked
    if per_kind:
        summary.dispatched = len(top_up(conn, redis, config, list(per_kind)))
    return summary

"""What one small file costs in Postgres round trips: the job's statements, counted on a
real connection whose cursors and commits keep a tally (psycopg2 subclasses)."""

from __future__ import annotations

from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from jobs.backup import backup_file
from jobs.worker import WorkerContext
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_image, add_video, ledger_rows


class Tally(psycopg2.extensions.connection):
    """A connection that counts what it sends: statements (one `execute` is one round
    trip, several statements joined by ';' included), the BEGIN psycopg2 sends before a
    transaction's first statement, and the COMMITs and ROLLBACKs that reach the server."""

    statements: list[str]
    begins: int
    commits: int
    rollbacks: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements, self.begins, self.commits, self.rollbacks = [], 0, 0, 0

    def _open(self) -> bool:
        return self.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE

    def commit(self) -> None:
        self.commits += self._open()
        super().commit()

    def rollback(self) -> None:
        self.rollbacks += self._open()
        super().rollback()

    def round_trips(self) -> int:
        return len(self.statements) + self.begins + self.commits + self.rollbacks


class TallyCursor(psycopg2.extras.RealDictCursor):
    def execute(self, query: Any, vars: Any = None) -> None:
        conn = self.connection
        assert isinstance(conn, Tally)
        if not conn.autocommit and not conn._open():
            conn.begins += 1
        conn.statements.append(query.decode() if isinstance(query, bytes) else str(query))
        super().execute(query, vars)


class TalliedContext(WorkerContext):
    """The worker's context with its one connection a `Tally`."""

    def __init__(self, config: Config, redis: Redis) -> None:
        super().__init__(config, redis)
        assert config.database_url
        self.tally: Tally = psycopg2.connect(
            config.database_url, connection_factory=Tally, cursor_factory=TallyCursor
        )

    def db(self) -> Connection:
        return self.tally

    def close(self) -> None:
        self.tally.close()


def back_up_counted(config: Config, redis: Redis, ledger_id: int) -> Tally:
    context = TalliedContext(config, redis)
    try:
        assert backup_file(context, ledger_id) == "done"
        return context.tally
    finally:
        context.close()


def report(tally: Tally) -> str:
    return "\n".join(
        [
            f"{len(tally.statements)} statements, {tally.begins} BEGIN, {tally.commits} COMMIT,"
            f" {tally.rollbacks} ROLLBACK: {tally.round_trips()} round trips",
            *(" ".join(s.split())[:160] for s in tally.statements),
        ]
    )


def ledger_writes(tally: Tally) -> list[str]:
    return [s for s in tally.statements if "UPDATE ledger" in s or "FOR UPDATE" in s]


def test_a_small_file_costs_one_claim_and_one_done_statement(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """One statement claims the row and says what is missing and paused; one records the
    copy, the row's done and its preferred copy; each with the app row's sync (in a
    savepoint: SAVEPOINT, the row's files, its update) and one commit."""
    add_image(conn, cdn, 1)
    backfill(config, conn, redis, "all", 10)
    [row] = ledger_rows(conn)
    tally = back_up_counted(config, redis, row["id"])
    print(report(tally))
    claim, done = ledger_writes(tally)
    assert tally.statements[0] == claim and "destination_pauses" in claim
    assert "INSERT INTO copies" in done and "status = 'done'" in done
    assert tally.commits == 2 and len(tally.statements) <= 8
    [finished] = ledger_rows(conn)
    assert finished["status"] == "done" and finished["destination"] == "local"


def test_two_destinations_record_the_first_copy_then_the_last_with_the_done(
    drive_s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_video(conn, cdn, 1, size=20_000)
    backfill(drive_s3_config, conn, redis, "all", 10)
    [row] = ledger_rows(conn)
    tally = back_up_counted(drive_s3_config, redis, row["id"])
    print(report(tally))
    claim, first_copy, done = ledger_writes(tally)
    assert "FOR UPDATE" in first_copy and "INSERT INTO copies" in first_copy
    assert "status = 'done'" in done
    [finished] = ledger_rows(conn)
    assert finished["status"] == "done" and finished["destination"] == "drive"

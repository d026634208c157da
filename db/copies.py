"""The copies table: one row per verified copy of a ledger file at one destination.

Copies are recorded by db/attempts.py, in the statements that check the row's claim."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, fetch_all


@dataclass(frozen=True)
class Copy:
    ledger_id: int
    destination: str
    location: str
    url: str
    size_bytes: int
    md5: str
    created_at: datetime
    verified_at: datetime | None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Copy:
        return cls(**{f: record[f] for f in cls.__dataclass_fields__})


_COLUMNS = ", ".join(Copy.__dataclass_fields__)


@dataclass(frozen=True)
class NewCopy:
    """A verified copy about to be recorded."""

    destination: str
    location: str
    url: str
    size: int
    md5: str


# The INSERT's conflict clause, for every statement that records a copy (db/ledger.py too).
UPSERT = """
    ON CONFLICT (ledger_id, destination) DO UPDATE
    SET location = excluded.location, url = excluded.url,
        size_bytes = excluded.size_bytes, md5 = excluded.md5,
        created_at = now(), verified_at = NULL
    -- The same copy recorded again keeps its age and its last verification.
    WHERE (copies.location, copies.url, copies.size_bytes, copies.md5)
          IS DISTINCT FROM (excluded.location, excluded.url, excluded.size_bytes, excluded.md5)
"""


def of_file(conn: Connection, ledger_id: int) -> list[Copy]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {_COLUMNS} FROM copies WHERE ledger_id = %s ORDER BY destination", (ledger_id,))
        return [Copy.from_record(r) for r in fetch_all(cur)]


def mark_verified(conn: Connection, ledger_id: int, destination: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE copies SET verified_at = now() WHERE ledger_id = %s AND destination = %s",
            (ledger_id, destination),
        )


def forget(conn: Connection, ledger_id: int, destination: str) -> bool:
    """A copy found missing or wrong: drop its row so the next attempt makes it again."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM copies WHERE ledger_id = %s AND destination = %s", (ledger_id, destination))
        return cur.rowcount == 1

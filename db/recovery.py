"""The queries behind `falback verify` and `falback restore`: which copies to check or read
back, and the claim that puts a file whose copy turned out bad back in the backup's way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from db.connection import Connection, Row, fetch_all
from db.copies import Copy
from db.ledger import LedgerRow

_COPY = ", ".join(f"c.{f}" for f in Copy.__dataclass_fields__)
_LEDGER = ", ".join(f"l.{f} AS l_{f}" for f in LedgerRow.__dataclass_fields__)


@dataclass(frozen=True)
class FileCopy:
    """A copy with the ledger row it is a copy of."""

    copy: Copy
    row: LedgerRow


def _file_copies(records: list[Row]) -> list[FileCopy]:
    out = []
    for r in records:
        row = LedgerRow.from_record({f: r[f"l_{f}"] for f in LedgerRow.__dataclass_fields__})
        out.append(FileCopy(Copy.from_record(r), row))
    return out


def destinations_holding(conn: Connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT DISTINCT destination FROM copies ORDER BY destination")
        return [str(r["destination"]) for r in fetch_all(cur)]


def copies_to_verify(conn: Connection, destinations: Sequence[str], sample: int | None) -> list[FileCopy]:
    """Every copy at these destinations (by ledger id), or `sample` of them drawn at random."""
    order = "random()" if sample is not None else "c.ledger_id, c.destination"
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT {_COPY}, {_LEDGER} FROM copies c JOIN ledger l ON l.id = c.ledger_id
            WHERE c.destination = ANY(%s) ORDER BY {order} LIMIT %s
            """,
            (list(destinations), sample),
        )
        return _file_copies(fetch_all(cur))


def copies_to_restore(
    conn: Connection,
    *,
    kinds: Sequence[str] | None = None,
    since: date | None = None,
    ids: Sequence[int] | None = None,
    destinations: Sequence[str],
) -> list[FileCopy]:
    """The copies of the files the filters select, at these destinations: per file, the
    verified ones first (most recently verified first), then in the order of `destinations`."""
    with conn.cursor() as cur:
        cur.execute(
            f"""
            SELECT {_COPY}, {_LEDGER} FROM copies c JOIN ledger l ON l.id = c.ledger_id
            WHERE c.destination = ANY(%(destinations)s)
              AND (%(kinds)s::text[] IS NULL OR l.kind = ANY(%(kinds)s::text[]))
              AND (%(since)s::date IS NULL
                   OR coalesce(l.source_created_at, l.created_at)
                      >= %(since)s::date::timestamp AT TIME ZONE 'UTC')
              AND (%(ids)s::bigint[] IS NULL OR l.id = ANY(%(ids)s::bigint[]))
            ORDER BY l.id, c.verified_at DESC NULLS LAST,
                     array_position(%(destinations)s::text[], c.destination)
            """,
            {
                "destinations": list(destinations),
                "kinds": list(kinds) if kinds is not None else None,
                "since": since,
                "ids": list(ids) if ids is not None else None,
            },
        )
        return _file_copies(fetch_all(cur))


def reopen(conn: Connection, ledger_ids: Sequence[int], reason: str) -> list[Row]:
    """'done' rows whose copy was found missing or wrong back to 'pending' with fresh
    attempts, for the backup job to claim and copy again; return id, kind and app row of
    the rows reopened (a row not 'done' is in the backup's hands already, or final)."""
    with conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ledger SET status = 'pending', attempts = 0, next_attempt_at = NULL,
                              missing_since = NULL, last_error = %s, updated_at = now()
            WHERE id = ANY(%s) AND status = 'done'
            RETURNING id, kind, source_table, source_id
            """,
            (reason, list(ledger_ids)),
        )
        return fetch_all(cur)

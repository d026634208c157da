"""Named queries on fal_deliveries: one row per fal request (migrations/0003_webhooks.sql)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from db import ledger
from db.connection import Connection, Row, fetch_all, fetch_one


@dataclass(frozen=True)
class Delivery:
    request_id: str
    gateway_request_id: str | None
    fal_user_id: str | None
    status: str  # OK or ERROR
    error: str | None
    payload_error: str | None
    source_table: str | None
    source_id: str | None
    variant: str | None
    fal_app: str | None
    files: int
    resolved: bool
    note: str | None


# A delivery and its files, one statement: the files only for a request id not seen before.
_RECORD = f"""
    WITH d AS (
        INSERT INTO fal_deliveries (request_id, gateway_request_id, fal_user_id, status, error,
                                    payload_error, source_table, source_id, variant, fal_app,
                                    files, resolved, note, resolved_at)
        VALUES (%(request_id)s, %(gateway_request_id)s, %(fal_user_id)s, %(status)s, %(error)s,
                %(payload_error)s, %(source_table)s, %(source_id)s, %(variant)s, %(fal_app)s,
                %(files)s, %(resolved)s, %(note)s, CASE WHEN %(resolved)s THEN now() END)
        ON CONFLICT (request_id) DO NOTHING
        RETURNING id
    ), f AS ({ledger.files_insert(only_if="EXISTS (SELECT 1 FROM d)")})
    SELECT d.id AS delivery_id, f.id, f.kind FROM d LEFT JOIN f ON true
"""
# The same as a prepared statement of the session: parsed and planned once per connection,
# which is most of what Postgres spends on a webhook otherwise.
_PARAMETERS = tuple(dict.fromkeys(re.findall(r"%\((\w+)\)s", _RECORD)))
_PREPARED_SQL = re.sub(r"%\((\w+)\)s", lambda m: f"${_PARAMETERS.index(m[1]) + 1}", _RECORD)
# Named after its text: behind a transaction pooler a server session is shared by every
# client, a previous release's processes too (a rolling deploy), and a statement of the
# same name but another text must never run in this one's place.
_PREPARED_NAME = "falback_record_delivery_" + hashlib.sha256(_PREPARED_SQL.encode()).hexdigest()[:16]
_PREPARE = f"PREPARE {_PREPARED_NAME} AS {_PREPARED_SQL}"
_EXECUTE = f"EXECUTE {_PREPARED_NAME} (" + ", ".join(f"%({name})s" for name in _PARAMETERS) + ")"


def insert_delivery(
    conn: Connection, d: Delivery, files: Sequence[ledger.NewFile], expiry_days: int
) -> tuple[int | None, list[Row]]:
    """Record a delivery and, if its request id is new, a ledger row per file, in one
    statement (one round trip per webhook); return the delivery's id, or None when this
    request id was seen before (nothing is written then), and the ledger rows created as
    db/ledger.insert_files returns them."""
    params = {**asdict(d), **ledger.files_params(files, expiry_days)}
    with conn.cursor() as cur:
        if conn.autocommit:
            _execute_prepared(cur, params)
        else:
            cur.execute(_RECORD, params)  # in the caller's transaction, which an error would abort
        rows = fetch_all(cur)
    if not rows:
        return None, []
    created = sorted((r for r in rows if r["id"] is not None), key=lambda r: r["id"])
    return int(rows[0]["delivery_id"]), created


def _execute_prepared(cur: psycopg2.extensions.cursor, params: dict[str, Any]) -> None:
    """The prepared statement, prepared first where the session lacks it (a new
    connection, or a pooler's other server connection). A failed statement costs nothing
    here: each one is its own transaction (autocommit)."""
    try:
        cur.execute(_EXECUTE, params)
        return
    except psycopg2.errors.InvalidSqlStatementName:
        pass
    try:
        # One message, one implicit transaction: a transaction pooler keeps both on one
        # server connection.
        cur.execute(f"{_PREPARE};\n{_EXECUTE}", params)
    except psycopg2.errors.DuplicatePreparedStatement:
        cur.execute(_RECORD, params)  # a pooler's server connections differ: plain text


def get_delivery(conn: Connection, delivery_id: int) -> Row | None:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM fal_deliveries WHERE id = %s", (delivery_id,))
        return fetch_one(cur)


def get_delivery_by_request(conn: Connection, request_id: str) -> Row | None:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM fal_deliveries WHERE request_id = %s", (request_id,))
        return fetch_one(cur)


def resolve(conn: Connection, delivery_id: int, files: int, note: str | None) -> bool:
    """Mark an unresolved delivery resolved; False if it already was (another job won)."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE fal_deliveries SET resolved = true, resolved_at = now(), files = %s, note = %s"
            " WHERE id = %s AND NOT resolved",
            (files, note, delivery_id),
        )
        return cur.rowcount == 1


def set_note(conn: Connection, delivery_id: int, note: str) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE fal_deliveries SET note = %s WHERE id = %s AND NOT resolved", (note, delivery_id))


def unresolved_count(conn: Connection) -> int:
    """Deliveries whose result is still missing; 0 before the migration has run."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.fal_deliveries') IS NOT NULL AS present")
        present = fetch_one(cur)
        if not present or not present["present"]:
            return 0
        cur.execute("SELECT count(*) AS n FROM fal_deliveries WHERE NOT resolved")
        row = fetch_one(cur)
    return int(row["n"]) if row else 0


def fetchable_unresolved(conn: Connection, limit: int) -> list[int]:
    """Deliveries whose result is still to be fetched and may still be held by fal's queue
    (fal keeps a result about an hour, six minutes when it is 10 KB or larger)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM fal_deliveries WHERE NOT resolved AND payload_error IS NOT NULL"
            " AND fal_app IS NOT NULL AND received_at > now() - interval '1 hour'"
            " ORDER BY received_at LIMIT %s",
            (limit,),
        )
        return [int(r["id"]) for r in fetch_all(cur)]

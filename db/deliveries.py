"""Named queries on fal_deliveries: one row per fal request (migrations/0003_webhooks.sql)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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


def insert_delivery(conn: Connection, d: Delivery) -> int | None:
    """Record a delivery; return its id, or None when this request id was seen before."""
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO fal_deliveries (request_id, gateway_request_id, fal_user_id, status, error,
                                        payload_error, source_table, source_id, variant, fal_app,
                                        files, resolved, note, resolved_at)
            VALUES (%(request_id)s, %(gateway_request_id)s, %(fal_user_id)s, %(status)s, %(error)s,
                    %(payload_error)s, %(source_table)s, %(source_id)s, %(variant)s, %(fal_app)s,
                    %(files)s, %(resolved)s, %(note)s, CASE WHEN %(resolved)s THEN now() END)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING id
            """,
            asdict(d),
        )
        row = fetch_one(cur)
    return int(row["id"]) if row else None


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

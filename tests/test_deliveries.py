"""db/deliveries.insert_delivery: a delivery and its files in one statement, prepared once
per session when it runs alone."""

from __future__ import annotations

from db import deliveries, ledger
from db.connection import Connection, fetch_all, statement_alone


def delivery(request_id: str) -> deliveries.Delivery:
    return deliveries.Delivery(
        request_id=request_id, gateway_request_id=None, fal_user_id=None, status="OK", error=None,
        payload_error=None, source_table=None, source_id=None, variant=None, fal_app=None,
        files=1, resolved=True, note=None,
    )  # fmt: skip


def files(request_id: str) -> list[ledger.NewFile]:
    return [
        ledger.NewFile(source_url=f"https://v3.fal.media/files/b/{request_id}.mp4", kind="regular"),
        ledger.NewFile(source_url=f"https://v3.fal.media/files/b/{request_id}_up.mp4", kind="upscale"),
    ]


def prepared(conn: Connection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT name FROM pg_prepared_statements")
        return [r["name"] for r in fetch_all(cur)]


def record(conn: Connection, request_id: str) -> tuple[int | None, list[str]]:
    with statement_alone(conn):
        delivery_id, created = deliveries.insert_delivery(conn, delivery(request_id), files(request_id), 7)
    return delivery_id, [r["kind"] for r in created]


def test_alone_it_is_prepared_once_per_session_and_again_after_a_reset(conn: Connection) -> None:
    first, kinds = record(conn, "req-1")
    assert first is not None and kinds == ["regular", "upscale"]
    assert prepared(conn) == [deliveries._PREPARED_NAME]
    assert record(conn, "req-2")[1] == ["regular", "upscale"]
    assert record(conn, "req-1") == (None, [])  # a repeat writes nothing
    with conn.cursor() as cur:
        cur.execute("DEALLOCATE ALL")  # what a pooler's reset of its server connection does
    conn.commit()
    assert record(conn, "req-3")[1] == ["regular", "upscale"]
    assert prepared(conn) == [deliveries._PREPARED_NAME]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM ledger")
        assert fetch_all(cur)[0]["n"] == 6


def test_in_a_transaction_it_is_plain_text_and_rolls_back_with_it(conn: Connection) -> None:
    delivery_id, created = deliveries.insert_delivery(conn, delivery("req-t"), files("req-t"), 7)
    assert delivery_id is not None and len(created) == 2
    assert prepared(conn) == []  # a failed EXECUTE would have aborted the caller's transaction
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM fal_deliveries")
        assert fetch_all(cur)[0]["n"] == 0


def test_a_statement_of_the_same_name_from_another_version_is_not_executed(conn: Connection) -> None:
    # Behind a transaction pooler, one server session serves every client, including
    # processes of the previous release during a rolling deploy: a statement that session
    # prepared for them, under the name this release would use, must not run for this one.
    # "falback_record_delivery": the name the release before this one prepared it under.
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("PREPARE falback_record_delivery (text) AS SELECT NULL::bigint AS delivery_id")
    conn.autocommit = False
    delivery_id, kinds = record(conn, "req-v")
    assert delivery_id is not None and kinds == ["regular", "upscale"]
    assert deliveries._PREPARED_NAME.startswith("falback_record_delivery_")

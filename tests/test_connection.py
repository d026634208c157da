"""db/connection.statement_alone: one statement as its own transaction."""

from __future__ import annotations

import psycopg2
import psycopg2.extensions
import pytest

from db.connection import Connection, fetch_one, statement_alone

IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE


def count(conn: Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM ledger")
        row = fetch_one(cur)
    conn.rollback()
    assert row is not None
    return int(row["n"])


def test_a_statement_alone_is_committed_by_itself_and_the_connection_goes_back(conn: Connection) -> None:
    with statement_alone(conn), conn.cursor() as cur:
        cur.execute("INSERT INTO ledger (source_url, kind) VALUES ('https://x/1.png', 'image')")
        assert conn.info.transaction_status == IDLE  # committed already: no COMMIT to send
    assert conn.autocommit is False
    assert count(conn) == 1


def test_a_failed_statement_alone_leaves_nothing(conn: Connection) -> None:
    with pytest.raises(psycopg2.errors.CheckViolation), statement_alone(conn), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ledger (source_url, kind)"
            " VALUES ('https://x/2.png', 'image'), ('https://x/3.png', 'bad')"
        )
    assert conn.autocommit is False
    assert count(conn) == 0


def test_inside_a_transaction_the_statement_joins_it(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO ledger (source_url, kind) VALUES ('https://x/4.png', 'image')")
    with statement_alone(conn), conn.cursor() as cur:
        cur.execute("INSERT INTO ledger (source_url, kind) VALUES ('https://x/5.png', 'image')")
    conn.rollback()  # both were in the caller's transaction
    assert count(conn) == 0

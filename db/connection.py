"""Postgres connections. Each process opens its own; nothing is shared across a fork."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg2
import psycopg2.extensions
import psycopg2.extras

Connection = psycopg2.extensions.connection


def connect(database_url: str, *, application_name: str = "falback") -> Connection:
    conn = psycopg2.connect(
        database_url,
        application_name=application_name,
        connect_timeout=10,
        cursor_factory=psycopg2.extras.RealDictCursor,
    )
    return conn


@contextmanager
def connection(database_url: str, *, application_name: str = "falback") -> Iterator[Connection]:
    """A connection that is committed on success, rolled back on error, always closed."""
    conn = connect(database_url, application_name=application_name)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


@contextmanager
def statement_alone(conn: Connection, alone: bool = True) -> Iterator[None]:
    """Run the block's one statement as a transaction of its own (autocommit): no BEGIN
    and COMMIT round trips. `alone=False` leaves the caller's transaction as it is."""
    if not alone or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        yield
        return
    conn.autocommit = True
    try:
        yield
    finally:
        if not conn.closed:  # a broken connection keeps its own error
            conn.autocommit = False


# Rows come back as dicts (RealDictCursor); the psycopg2 stubs only know tuples.
Row = dict[str, Any]


def fetch_one(cur: psycopg2.extensions.cursor) -> Row | None:
    return cast(Row | None, cur.fetchone())


def fetch_all(cur: psycopg2.extensions.cursor) -> list[Row]:
    return cast(list[Row], cur.fetchall())

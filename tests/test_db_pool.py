"""The web process's Postgres pool (db/pool.py): reuse, bounds, broken connections, and
the same through a real gunicorn (a terminated backend, a Postgres restart)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.config import Config
from db.connection import Connection, connect, fetch_all, fetch_one
from db.pool import ConnectionPool, PoolTimeout
from tests.fakes.jwks_server import JwksServer, jwks, signed_headers
from tests.support.gunicorn import gunicorn
from tests.support.servers import Servers

FAL_TIMEOUT = 15.0


def backend_pid(conn: Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        row = fetch_one(cur)
    assert row is not None
    return int(row["pid"])


def web_backends(conn: Connection) -> set[int]:
    """Backend pids of the web process's connections to this test's database."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'falback-web'"
            " AND datname = current_database()"
        )
        pids = {int(r["pid"]) for r in fetch_all(cur)}
    conn.rollback()
    return pids


def terminate(conn: Connection, pids: set[int]) -> None:
    with conn.cursor() as cur:
        for pid in pids:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.rollback()


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool]:
    made = ConnectionPool(
        lambda: connect(database_url, application_name="falback-web"), size=2, wait_seconds=0.2
    )
    yield made
    made.close()


def test_a_released_connection_is_reused(pool: ConnectionPool) -> None:
    first = pool.acquire()
    pid = backend_pid(first)
    first.commit()
    pool.release(first)
    second = pool.acquire()
    assert second is first and backend_pid(second) == pid
    pool.release(second)
    assert pool.opened == 1 and pool.idle_count() == 1


def test_a_connection_comes_back_rolled_back(pool: ConnectionPool) -> None:
    conn = pool.acquire()
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE scratch (n int)")
        cur.execute("INSERT INTO scratch VALUES (1)")
    pool.release(conn)  # not committed: the next user must not see it
    again = pool.acquire()
    assert again is conn
    assert again.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
    with again.cursor() as cur:
        cur.execute("SELECT to_regclass('pg_temp.scratch') IS NULL AS gone")
        row = fetch_one(cur)
    assert row is not None and row["gone"] is True
    pool.release(again)


def test_a_connection_in_a_failed_transaction_is_rolled_back_and_kept(pool: ConnectionPool) -> None:
    conn = pool.acquire()
    with pytest.raises(psycopg2.errors.DivisionByZero), conn.cursor() as cur:
        cur.execute("SELECT 1 / 0")
    pool.release(conn)
    again = pool.acquire()
    assert again is conn and backend_pid(again) > 0
    pool.release(again)


def test_the_pool_is_bounded_and_a_waiter_gets_a_timeout(pool: ConnectionPool) -> None:
    held = [pool.acquire(), pool.acquire()]
    start = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.acquire()
    assert time.monotonic() - start >= 0.2
    assert isinstance(PoolTimeout(), psycopg2.OperationalError)  # the web's 503 path
    pool.release(held.pop())
    pool.release(pool.acquire())  # the freed slot is usable again
    pool.release(held.pop())
    assert pool.opened == 2


def test_a_connection_the_server_closed_is_replaced(pool: ConnectionPool, conn: Connection) -> None:
    first = pool.acquire()
    pid = backend_pid(first)
    first.commit()
    pool.release(first)
    terminate(conn, {pid})
    deadline = time.monotonic() + 5
    while pid in web_backends(conn) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = pool.acquire()
    assert second is not first and first.closed
    assert backend_pid(second) != pid
    pool.release(second)


def test_a_closed_connection_is_not_kept(pool: ConnectionPool) -> None:
    conn = pool.acquire()
    conn.close()
    pool.release(conn)
    assert pool.idle_count() == 0
    fresh = pool.acquire()
    assert not fresh.closed
    pool.release(fresh)


def test_a_failed_connect_gives_the_slot_back(database_url: str) -> None:
    broken = database_url.replace("/test_", "/missing_")
    pool = ConnectionPool(lambda: connect(broken), size=1, wait_seconds=0.1)
    for _ in range(3):  # a leaked slot would turn the second try into a PoolTimeout
        with pytest.raises(psycopg2.OperationalError) as caught:
            pool.acquire()
        assert not isinstance(caught.value, PoolTimeout)


# --- through gunicorn ------------------------------------------------------------------


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks_url(key: Ed25519PrivateKey) -> Iterator[str]:
    with JwksServer(jwks(key)) as server:
        yield server.url


def deliver(base_url: str, key: Ed25519PrivateKey, request_id: str) -> int:
    body = json.dumps(
        {
            "request_id": request_id,
            "status": "OK",
            "payload": {"video": {"url": f"https://v3b.fal.media/files/b/t/{request_id}.mp4"}},
        }
    ).encode()
    headers = signed_headers(key, body, timestamp=int(time.time()), request_id=request_id, user_id="u")
    response = requests.post(
        f"{base_url}/webhooks/fal",
        data=body,
        headers={**headers, "Content-Type": "application/json"},
        timeout=FAL_TIMEOUT,
    )
    return response.status_code


def test_webhooks_share_one_connection_and_survive_a_terminated_backend(
    key: Ed25519PrivateKey, jwks_url: str, config: Config, conn: Connection, tmp_path: Path
) -> None:
    web = config.replace(fal_jwks_urls=(jwks_url,))
    with gunicorn(web, tmp_path / "gunicorn.log", workers=1, threads=2) as base_url:
        assert deliver(base_url, key, "req-pool-0") == 200
        before = web_backends(conn)
        assert [deliver(base_url, key, f"req-pool-{n}") for n in range(1, 21)] == [200] * 20
        # One at a time, so one connection, the same one, served all of them.
        assert web_backends(conn) == before and len(before) == 1
        terminate(conn, before)
        assert deliver(base_url, key, "req-pool-after") == 200
        after = web_backends(conn)
        assert len(after) == 1 and after.isdisjoint(before)


def test_a_postgres_restart_is_503_or_200_never_500(
    key: Ed25519PrivateKey, jwks_url: str, own_database: str, redis_url: str, servers: Servers, tmp_path: Path
) -> None:
    """The pool holds connections when Postgres goes away: each is found dead, never
    handed to a request, and the first webhook after the restart is recorded."""
    web = Config(database_url=own_database, redis_url=redis_url, data_dir=tmp_path, fal_jwks_urls=(jwks_url,))
    with gunicorn(web, tmp_path / "gunicorn.log", workers=1, threads=2) as base_url:
        assert [deliver(base_url, key, f"req-up-{n}") for n in range(4)] == [200] * 4
        servers.postgres.pause()
        try:
            assert deliver(base_url, key, "req-down") == 503
        finally:
            servers.postgres.resume()
        assert deliver(base_url, key, "req-down") == 200  # fal's retry
        assert [deliver(base_url, key, f"req-back-{n}") for n in range(4)] == [200] * 4
    check = connect(own_database)
    try:
        with check.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM fal_deliveries")
            row = fetch_one(cur)
        assert row is not None and row["n"] == 9
    finally:
        check.close()

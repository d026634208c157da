"""What a request uses: the config, the Redis client, and a Postgres connection borrowed
from the process's pool (db/pool.py) on first use and given back, rolled back, at
teardown."""

from __future__ import annotations

from flask import Flask, current_app, g
from redis import Redis

from core.config import Config
from db.connection import Connection, connect
from db.pool import ConnectionPool

DB_POOL_EXTENSION = "falback_db_pool"
# Past this, answer 503 (fal retries) rather than outlast fal's 15 s waiting for a slot.
DB_SLOT_WAIT_SECONDS = 8.0


def get_config() -> Config:
    config: Config = current_app.config["FALBACK"]
    return config


def get_redis() -> Redis:
    redis: Redis = current_app.extensions["falback_redis"]
    return redis


def get_pool() -> ConnectionPool:
    pool: ConnectionPool = current_app.extensions[DB_POOL_EXTENSION]
    return pool


def get_db() -> Connection:
    if "db" not in g:
        g.db = get_pool().acquire()
    conn: Connection = g.db
    return conn


def close_db(_error: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        get_pool().release(conn)


def init_app(app: Flask, config: Config) -> None:
    """One pool per process: the app is created in each gunicorn worker, after the fork
    (no preload), so no connection is ever shared across one."""
    url = config.database_url
    assert url
    app.extensions[DB_POOL_EXTENSION] = ConnectionPool(
        lambda: connect(url, application_name="falback-web"),
        size=config.web_db_connections,
        wait_seconds=DB_SLOT_WAIT_SECONDS,
    )
    app.teardown_appcontext(close_db)

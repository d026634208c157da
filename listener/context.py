"""Per-request Postgres connection (flaskr's get_db), closed at teardown."""

from __future__ import annotations

import threading

import psycopg2
from flask import Flask, current_app, g
from redis import Redis

from core.config import Config
from db.connection import Connection, connect

# Set by listener.serving under gevent: a BoundedSemaphore of Postgres connections per process.
DB_SLOTS_EXTENSION = "falback_db_slots"
# Past this, answer 503 (fal retries) rather than outlast fal's 15 s waiting for a slot.
DB_SLOT_WAIT_SECONDS = 8.0


def get_config() -> Config:
    config: Config = current_app.config["FALBACK"]
    return config


def get_redis() -> Redis:
    redis: Redis = current_app.extensions["falback_redis"]
    return redis


def get_db() -> Connection:
    if "db" not in g:
        url = get_config().database_url
        assert url
        slots: threading.BoundedSemaphore | None = current_app.extensions.get(DB_SLOTS_EXTENSION)
        if slots is not None:
            if not slots.acquire(timeout=DB_SLOT_WAIT_SECONDS):
                raise psycopg2.OperationalError("every Postgres connection of this process is busy")
            g.db_slot = slots
        g.db = connect(url, application_name="falback-web")
    conn: Connection = g.db
    return conn


def close_db(_error: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    try:
        if conn is not None:
            conn.close()
    finally:
        slot: threading.BoundedSemaphore | None = g.pop("db_slot", None)
        if slot is not None:
            slot.release()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)

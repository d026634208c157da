"""Per-request Postgres connection (flaskr's get_db), closed at teardown."""

from __future__ import annotations

from flask import Flask, current_app, g
from redis import Redis

from core.config import Config
from db.connection import Connection, connect


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
        g.db = connect(url, application_name="falback-web")
    conn: Connection = g.db
    return conn


def close_db(_error: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        conn.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(close_db)

"""GET /healthz: 200 when Postgres and Redis both answer, else 503 naming what is down.

A paused Drive destination (signed out, storage full, daily cap) is reported under
"drive" with the reason and its fix; it does not make falback unhealthy (restarting
would not help), but monitoring sees it."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from db import drive_state
from listener.context import get_db, get_redis

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/ping")
def ping() -> Response:
    """No I/O at all: a baseline for benchmarks, and a liveness probe."""
    return jsonify(status="ok")


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks: dict[str, str] = {}
    extra: dict[str, str] = {}
    try:
        conn = get_db()
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        checks["postgres"] = "ok"
        paused = drive_state.pause_reason(conn, "drive")
        conn.commit()
        if paused is not None:
            extra["drive"] = f"paused until {paused[0]:%Y-%m-%d %H:%M} UTC: {paused[1]}"
    except Exception as e:
        log.warning("healthz: postgres down: %s", e)
        checks["postgres"] = "down"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as e:
        log.warning("healthz: redis down: %s", e)
        checks["redis"] = "down"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "unavailable", **checks, **extra), 200 if healthy else 503

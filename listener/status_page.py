"""The status page (GET /status, HTML), its JSON twin (GET /api/status) and the retry
action for a group of failures (POST /status/retry), all behind the admin token.

The retry action changes state, so it is refused unless the browser says the request
comes from this site's own page (listener/auth.py `same_origin`), whatever the
credentials: a page elsewhere cannot make an operator's browser retry anything, and
scripts have `falback retry-failed`.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from redis import RedisError
from werkzeug.wrappers import Response as BaseResponse

from db import app_sync, figures, ledger
from jobs.dispatch import top_up_for
from jobs.queues import counts as queue_counts
from listener.auth import admin_denied, same_origin
from listener.context import get_config, get_db, get_redis

bp = Blueprint("status_page", __name__)
log = logging.getLogger(__name__)


@bp.before_request
def require_admin() -> Response | None:
    return admin_denied()


@bp.get("/api/status")
def api_status() -> Response:
    found = figures.collect(get_db(), configured=get_config().destination_names)
    found.queues = queue_counts(get_redis())
    return jsonify(found.as_dict())


@bp.get("/status")
def status() -> str:
    found = figures.collect(get_db(), configured=get_config().destination_names)
    found.queues = queue_counts(get_redis())
    return render_template(
        "status.html",
        f=found,
        duration=figures.duration,
        size=figures.size,
        retried=request.args.get("retried"),
    )


@bp.post("/status/retry")
def retry() -> BaseResponse | tuple[Response, int]:
    if not same_origin():
        return jsonify(error="cross-site request refused"), 403
    reason = request.form.get("reason")
    if reason is None or len(reason) > 10_000:
        return jsonify(error="form field 'reason' (a failure reason from the status page) is required"), 400
    conn = get_db()
    rows = ledger.reset_failed_with_reason(conn, reason or None)  # "": no reason recorded
    for row in rows:
        app_sync.sync_app_row(conn, row["source_table"], row["source_id"])
    conn.commit()
    try:
        top_up_for(conn, get_redis(), get_config(), [(r["id"], r["kind"]) for r in rows])
    except RedisError as e:
        # The rows are back in the backlog, committed; the next top-up or sweep takes them.
        conn.rollback()
        log.warning("status page: redis unavailable (%s); the retried files wait in the backlog", e)
    log.info("status page: %d failed file(s) back to the queue (reason %r)", len(rows), reason[:200])
    return redirect(url_for("status_page.status", retried=len(rows)), code=303)

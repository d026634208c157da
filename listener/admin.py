"""Admin API: POST /backfill (the user's existing call). The status figures are in
listener/status_page.py (GET /status, GET /api/status)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request

from core.kinds import BACKFILL_TYPES
from jobs.backfill import BackfillError, backfill, validate
from listener.auth import admin_denied
from listener.context import get_config, get_db, get_redis

bp = Blueprint("admin", __name__)
log = logging.getLogger(__name__)

EXPECTED = {"type": f"one of {', '.join(BACKFILL_TYPES)}", "limit": "a whole number"}


@bp.before_request
def require_admin() -> Response | None:
    return admin_denied()


@bp.post("/backfill")
def post_backfill() -> tuple[Response, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error='body must be a JSON object like {"type": "upscale", "limit": 10}'), 400
    unknown = set(body) - {"type", "limit", "dry_run"}
    if unknown:
        return jsonify(error=f"unknown fields: {', '.join(sorted(unknown))}"), 400
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        return jsonify(error="dry_run must be true or false"), 400
    for field, expected in EXPECTED.items():
        # validate() looks the value up and quotes it: an array or object would not hash,
        # and a deeply nested one would not print.
        value = body.get(field)
        if isinstance(value, list | dict):
            kind = "array" if isinstance(value, list) else "object"
            return jsonify(error=f"{field} must be {expected}; got a JSON {kind}"), 400
    config = get_config()
    try:
        type_, limit = validate(config, body.get("type"), body.get("limit"))
        summary = backfill(config, get_db(), get_redis(), type_, limit, dry_run=dry_run)
    except BackfillError as e:
        return jsonify(error=str(e)), 400
    log.info(
        "backfill %s limit %d: %d files added to the backlog, %d dispatched (dry run: %s)",
        type_,
        limit,
        summary.files,
        summary.dispatched,
        dry_run,
    )
    return jsonify(summary.as_dict()), 200

"""rq-dashboard at /rq, behind the admin token (the embedded blueprint has no auth).

rq-dashboard 0.9.0 trusts its URL: an unknown registry, `per_page` 0, a page that is not
a number, a Redis instance it does not have or a job id rq refuses each raise inside its
views (500). The arguments are checked before its views run; rq's "no such job" and "not
allowed for this job" become 404 and 409, and so does Redis refusing a command for the
state it is in (409; e.g. compacting a queue that is empty). Outages stay 5xx.
"""

from __future__ import annotations

import re

import rq_dashboard
from flask import Flask, Response, current_app, jsonify, request
from redis.exceptions import ResponseError
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from core.config import Config
from listener.auth import admin_denied

# The registries rq-dashboard knows (web.py: get_queue_registry_jobs_count, empty_queue).
REGISTRIES = frozenset({"queued", "failed", "deferred", "started", "finished", "scheduled", "canceled"})
ORDERS = frozenset({"asc", "dsc"})
# rq's job id alphabet (rq.job.JOB_ID_PATTERN); any other id cannot name a job.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")
# The page offers 1-200 per page; Redis wants offsets that fit 64 bits.
LIMITS = {"per_page": 1000, "page": 10**9}


def mount(app: Flask, config: Config) -> None:
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = [config.redis_url]
    rq_dashboard.web.setup_rq_connection(app)

    name = rq_dashboard.blueprint.name
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    # Attached to this app, not to rq-dashboard's module-level blueprint, which may
    # already be registered on another app (tests build several). Auth first, then the
    # arguments, then rq-dashboard's own hook (which raises on an unknown instance).
    app.before_request_funcs.setdefault(name, [])[:0] = [admin_denied, check_arguments]
    app.after_request_funcs.setdefault(name, []).append(forbid_framing)
    handlers = app.error_handler_spec[name][None]
    handlers[NoSuchJobError] = no_such_job
    handlers[InvalidJobOperation] = invalid_operation
    handlers[ResponseError] = redis_refused


def check_arguments() -> tuple[Response, int] | None:
    args = request.view_args or {}
    instance = args.get("instance_number")
    if instance is not None and instance >= len(current_app.config["RQ_DASHBOARD_REDIS_URL"]):
        return jsonify(error="no such Redis instance"), 404
    registry = args.get("registry_name")
    if registry is not None and registry not in REGISTRIES:
        return jsonify(error=f"registry must be one of {', '.join(sorted(REGISTRIES))}"), 404
    for name, top in LIMITS.items():
        value = str(args.get(name, 1))
        if not (value.isascii() and value.isdigit() and len(value) <= 12 and 1 <= int(value) <= top):
            return jsonify(error=f"{name} must be a whole number from 1 to {top}"), 400
    if args.get("order", "asc") not in ORDERS:
        return jsonify(error="order must be asc or dsc"), 400
    job_id = args.get("job_id")
    if job_id is not None and not JOB_ID.fullmatch(job_id):
        return jsonify(error="no such job"), 404
    return None


def no_such_job(_error: NoSuchJobError) -> tuple[Response, int]:
    return jsonify(error="no such job"), 404


def invalid_operation(error: InvalidJobOperation) -> tuple[Response, int]:
    # e.g. requeueing a job that has not failed
    return jsonify(error=str(error)), 409


def redis_refused(error: ResponseError) -> tuple[Response, int]:
    # A command error (no such key, wrong type, out of range), not a connection failure:
    # retrying the same request cannot help.
    return jsonify(error=f"Redis refused the operation: {error}"), 409


def forbid_framing(response: Response) -> Response:
    # A framed dashboard would let another site trick a click on its buttons, and those
    # clicks are same-origin requests.
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response

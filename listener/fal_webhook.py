"""POST /webhooks/fal: fal's completion webhook (docs/webhooks.md).

verify the ED25519 signature over the raw body -> parse -> record the delivery (unique by
request_id) and a ledger row per file in one transaction (jobs.fal.record) -> dispatch.
Nothing is downloaded here, so fal gets its answer in milliseconds.

Answers: 200 recorded (or a repeat: nothing changes); 400 malformed body; 401 bad
signature; 413 too large; 503 keys or Postgres unavailable (fal retries). Redis down is
still 200: the ledger rows stay 'pending' and the sweep dispatches them.

The webhook URL may carry ``?table=gen_videos&id=123&variant=upscale`` (link the file to
its app row) and ``fal_app=<owner>/<app>`` (where to fetch a result fal left out of the
body). Both are unsigned hints from the URL the app registered: a bad one is dropped with
a note on the delivery, never a reason to refuse signed media.
"""

from __future__ import annotations

import logging

import psycopg2
from flask import Blueprint, Response, current_app, jsonify, request
from redis import RedisError
from werkzeug.exceptions import RequestEntityTooLarge

from jobs.dispatch import top_up_for
from jobs.fal.api import body_limit
from jobs.fal.jwks import JwksCache
from jobs.fal.payload import FalWebhook, MalformedWebhookError, load_body, parse_hints, parse_webhook
from jobs.fal.record import Recorded, record_webhook
from jobs.fal.signature import verify_webhook
from jobs.fal_results import enqueue_fetch
from listener.context import get_config, get_db, get_redis

bp = Blueprint("fal_webhook", __name__)
log = logging.getLogger(__name__)

JWKS_EXTENSION = "falback_jwks"


def get_jwks() -> JwksCache:
    jwks: JwksCache = current_app.extensions[JWKS_EXTENSION]
    return jwks


@bp.before_request
def allow_data_uris() -> None:
    # sync-mode results carry files inline; the app-wide limit is for everything else.
    request.max_content_length = body_limit(get_config())


@bp.errorhandler(RequestEntityTooLarge)
def too_large(_error: RequestEntityTooLarge) -> tuple[Response, int]:
    return jsonify(error=f"body larger than {request.max_content_length} bytes"), 413


@bp.post("/webhooks/fal")
def receive() -> tuple[Response, int]:
    config = get_config()
    raw = request.get_data()
    verified = verify_webhook(request.headers, raw, get_jwks(), expected_user_id=config.fal_webhook_user_id)
    if not verified.ok:
        if verified.retryable:
            response = jsonify(error="fal's signing keys are unavailable; retry later")
            response.headers["Retry-After"] = "60"
            return response, 503
        return jsonify(error=f"signature rejected: {verified.reason.value}"), 401
    try:
        hook = parse_webhook(load_body(raw), max_data_bytes=config.max_data_uri_bytes)
    except MalformedWebhookError as e:
        return jsonify(error=str(e)), 400
    # Both ids are signed (the body through its hash) but nothing ties them together, so
    # they must agree. fal's docs leave open whether a retried run signs its
    # gateway_request_id, so that counts too.
    if verified.request_id not in (hook.request_id, hook.gateway_request_id):
        return jsonify(error="X-Fal-Webhook-Request-Id does not match the body's request_id"), 401
    hints = parse_hints(request.query_string)
    try:
        recorded = record_webhook(get_db(), config, hook, hints, verified.user_id)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
        # Nothing was committed; teardown closes the connection.
        log.error(
            "fal webhook %s: postgres unavailable (%s); answering 503", hook.request_id, type(e).__name__
        )
        return jsonify(error="database unavailable; retry later"), 503
    return _enqueue(hook, recorded)


def _enqueue(hook: FalWebhook, outcome: Recorded) -> tuple[Response, int]:
    config = get_config()
    ids = [ledger_id for ledger_id, _ in outcome.rows]
    answer = {
        "request_id": hook.request_id,
        "delivery": outcome.delivery_id,
        "duplicate": outcome.duplicate,
        "files": outcome.files,
        "new_ledger_rows": len(ids),
    }
    if outcome.duplicate and not outcome.fetch:
        log.info(
            "fal webhook %s: repeat delivery %d, nothing to do",
            hook.request_id,
            outcome.delivery_id,
            extra={"delivery_id": outcome.delivery_id},
        )
        return jsonify(answer), 200
    log.info(
        "fal webhook %s: delivery %d, %s, %d file(s), ledger %s%s",
        hook.request_id,
        outcome.delivery_id,
        hook.kind.value,
        outcome.files,
        ids,
        f" ({outcome.note})" if outcome.note else "",
        extra={"delivery_id": outcome.delivery_id},
    )
    conn = get_db()
    try:
        top_up_for(conn, get_redis(), config, outcome.rows)
        if outcome.fetch:
            enqueue_fetch(get_redis(), outcome.delivery_id)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
        # Rows and delivery are committed; a row left 'pending' is the sweep's to dispatch.
        log.warning(
            "fal webhook %s: postgres lost after commit (%s); the sweep finishes",
            hook.request_id,
            type(e).__name__,
        )
        return jsonify(answer), 200
    except RedisError as e:
        conn.rollback()
        if outcome.fetch:
            # Nothing sweeps deliveries: have fal retry, and queue the fetch then.
            log.error(
                "fal webhook %s: redis unavailable (%s); fetch not queued, answering 503",
                hook.request_id,
                type(e).__name__,
            )
            return jsonify(error="queue unavailable; retry later"), 503
        log.warning(
            "fal webhook %s: redis unavailable (%s); ledger %s stay pending for the sweep",
            hook.request_id,
            type(e).__name__,
            ids,
        )
        answer["queued"] = False
        return jsonify(answer), 200
    answer["queued"] = True
    return jsonify(answer), 200

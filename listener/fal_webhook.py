"""POST /webhooks/fal: fal's completion webhook (docs/webhooks.md).

verify the ED25519 signature over the raw body -> parse -> in ONE transaction record the
delivery (unique by request_id) and a ledger row per file -> commit -> enqueue. Nothing is
downloaded here, so fal gets its answer in milliseconds.

Answers: 200 recorded (or a repeat: nothing changes); 400 malformed body or query string;
401 bad signature; 413 too large; 503 keys or Postgres unavailable (fal retries). Redis
down is still 200: the ledger rows stay 'pending' and the sweep enqueues them.

The webhook URL may carry ``?table=gen_videos&id=123&variant=upscale`` (link the file to
its app row) and ``fal_app=<owner>/<app>`` (where to fetch a result fal left out of the
body); both are unsigned hints from the URL the app registered.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

import psycopg2
from flask import Blueprint, Response, current_app, jsonify, request
from redis import RedisError
from werkzeug.exceptions import RequestEntityTooLarge

from core.config import Config
from db import deliveries
from db.connection import Connection
from jobs.fal.jwks import JwksCache
from jobs.fal.payload import (
    AppLink,
    FalWebhook,
    InvalidLinkError,
    MalformedWebhookError,
    WebhookKind,
    load_body,
    parse_app_link,
    parse_webhook,
)
from jobs.fal.plan import clip, optional, plan_files, record_files
from jobs.fal.signature import verify_webhook
from jobs.fal_results import body_limit, enqueue_fetch, unfetchable_reason
from jobs.intake import enqueue_rows
from listener.context import get_config, get_db, get_redis

bp = Blueprint("fal_webhook", __name__)
log = logging.getLogger(__name__)

JWKS_EXTENSION = "falback_jwks"
# A fal model id: owner/app, optionally an endpoint path (fal-ai/kling-video/v1/pro/...).
_FAL_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){1,7}")


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
    verified = verify_webhook(request.headers, raw, get_jwks(),
                              expected_user_id=config.fal_webhook_user_id)
    if not verified.ok:
        if verified.retryable:
            response = jsonify(error="fal's signing keys are unavailable; retry later")
            response.headers["Retry-After"] = "60"
            return response, 503
        return jsonify(error=f"signature rejected: {verified.reason.value}"), 401
    try:
        hook = parse_webhook(load_body(raw), max_data_bytes=config.max_data_uri_bytes)
        _check_request_id(hook)
        link = parse_app_link(request.query_string)
        fal_app = parse_fal_app(request.query_string)
    except (MalformedWebhookError, InvalidLinkError) as e:
        return jsonify(error=str(e)), 400
    # Both ids are signed (the body through its hash) but nothing ties them together, so
    # they must agree. fal's docs leave open whether a retried run signs its
    # gateway_request_id, so that counts too.
    if verified.request_id not in (hook.request_id, hook.gateway_request_id):
        return jsonify(error="X-Fal-Webhook-Request-Id does not match the body's request_id"), 401
    try:
        outcome = _record(get_db(), config, hook, link, fal_app, verified.user_id)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
        log.error("fal webhook %s: postgres unavailable (%s); answering 503",
                  hook.request_id, type(e).__name__)
        return jsonify(error="database unavailable; retry later"), 503
    return _enqueue(config, hook, outcome)


@dataclass
class _Outcome:
    delivery_id: int
    duplicate: bool
    rows: list[tuple[int, str]]
    files: int
    fetch: bool  # a result to fetch from fal's queue API
    note: str | None


def _record(
    conn: Connection,
    config: Config,
    hook: FalWebhook,
    link: AppLink | None,
    fal_app: str | None,
    user_id: str | None,
) -> _Outcome:
    plan = None
    note: str | None = None
    fetch = False
    if hook.kind is WebhookKind.MEDIA:
        plan = plan_files(hook.media, hook.problems, request_id=hook.request_id, link=link,
                          fal_app=fal_app)
        if hook.truncated:
            plan.notes.append("payload too large or deep to walk completely; some files may be missing")
        note = plan.note()
    elif hook.kind is WebhookKind.ERROR:
        note = "fal reported an error; nothing to copy"
    else:
        note = unfetchable_reason(config, fal_app)
        fetch = note is None
        note = note or "waiting for the result from fal's queue API"
    delivery = deliveries.Delivery(
        request_id=hook.request_id,
        gateway_request_id=optional(hook.gateway_request_id),
        fal_user_id=optional(user_id),
        status="ERROR" if hook.kind is WebhookKind.ERROR else "OK",
        error=clip(hook.error, 2000) if hook.kind is WebhookKind.ERROR and hook.error else None,
        payload_error=(clip(hook.error or "payload is null", 2000)
                       if hook.kind is WebhookKind.PAYLOAD_ERROR else None),
        source_table=link.source_table if link else None,
        source_id=str(link.source_id) if link else None,
        variant=link.variant if link else None,
        fal_app=fal_app,
        files=len(plan.files) if plan else 0,
        resolved=hook.kind is not WebhookKind.PAYLOAD_ERROR,
        note=note,
    )
    # On any error nothing is committed: teardown closes the connection.
    delivery_id = deliveries.insert_delivery(conn, delivery)
    if delivery_id is None:
        existing = deliveries.get_delivery_by_request(conn, hook.request_id)
        conn.commit()
        assert existing is not None
        # A repeat of an unresolved payload_error: fal retried, maybe because the first
        # answer was a 503 when the fetch job could not be queued. Queue it now.
        refetch = (not existing["resolved"] and existing["payload_error"] is not None
                   and unfetchable_reason(config, existing["fal_app"]) is None)
        return _Outcome(int(existing["id"]), True, [], int(existing["files"]), refetch, None)
    rows = record_files(conn, plan, config.expiry_days) if plan else []
    conn.commit()
    return _Outcome(delivery_id, False, rows, delivery.files, fetch, note)


def _enqueue(config: Config, hook: FalWebhook, outcome: _Outcome) -> tuple[Response, int]:
    ids = [ledger_id for ledger_id, _ in outcome.rows]
    answer = {"request_id": hook.request_id, "delivery": outcome.delivery_id,
              "duplicate": outcome.duplicate, "files": outcome.files, "new_ledger_rows": len(ids)}
    if outcome.duplicate and not outcome.fetch:
        log.info("fal webhook %s: repeat delivery %d, nothing to do", hook.request_id, outcome.delivery_id)
        return jsonify(answer), 200
    log.info("fal webhook %s: delivery %d, %s, %d file(s), ledger %s%s", hook.request_id,
             outcome.delivery_id, hook.kind.value, outcome.files, ids,
             f" ({outcome.note})" if outcome.note else "")
    conn = get_db()
    try:
        enqueue_rows(conn, get_redis(), config, outcome.rows)
        if outcome.fetch:
            enqueue_fetch(get_redis(), outcome.delivery_id)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
        # Rows and delivery are committed; a row left 'pending' is the sweep's to enqueue.
        log.warning("fal webhook %s: postgres lost after commit (%s); the sweep finishes",
                    hook.request_id, type(e).__name__)
        return jsonify(answer), 200
    except RedisError as e:
        conn.rollback()
        if outcome.fetch:
            # Nothing sweeps deliveries: have fal retry, and queue the fetch then.
            log.error("fal webhook %s: redis unavailable (%s); fetch not queued, answering 503",
                      hook.request_id, type(e).__name__)
            return jsonify(error="queue unavailable; retry later"), 503
        log.warning("fal webhook %s: redis unavailable (%s); ledger %s stay pending for the sweep",
                    hook.request_id, type(e).__name__, ids)
        answer["queued"] = False
        return jsonify(answer), 200
    answer["queued"] = True
    return jsonify(answer), 200


def _check_request_id(hook: FalWebhook) -> None:
    if clip(hook.request_id, 255) != hook.request_id:
        raise MalformedWebhookError("request_id contains characters that cannot be stored")


def parse_fal_app(query_string: bytes) -> str | None:
    """The fal model id from ``fal_app`` in the query string (None when absent). Its
    endpoint path can tell an upscaler; the queue URL uses only owner/app."""
    try:
        params = parse_qs(query_string.decode("utf-8", "replace"), max_num_fields=50)
    except ValueError:
        raise InvalidLinkError("too many query parameters") from None
    values = params.get("fal_app")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidLinkError("query parameter 'fal_app' is given more than once")
    if not _FAL_APP.fullmatch(values[0]):
        raise InvalidLinkError("fal_app must be a fal model id like fal-ai/kling-video")
    return values[0]

"""POST /webhooks/app: the app says a gen_videos / gen_images row was written (docs/webhooks.md).

Body: Supabase Database Webhook shape, ``{"type": "INSERT"|"UPDATE"|"DELETE", "table":
"gen_videos", "schema": "public", "record": {"id": 123, ...}, "old_record": ...}``; the
user's own backend sends the same (``schema`` and ``old_record`` optional).

Authentication, with FALBACK_APP_WEBHOOK_SECRET (``whsec_<base64>``):
- Standard Webhooks: ``webhook-id``, ``webhook-timestamp`` (within 5 minutes) and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` (several,
  space-separated, during a key rotation), keyed with the base64-decoded secret;
- or, for Supabase (pg_net cannot sign), the header ``X-Falback-Secret: <the secret>``.

INSERT/UPDATE create or link the row's ledger rows and dispatch them; DELETE changes
nothing (the backup stays). 400 malformed, 401 bad auth, 403 no secret configured, 413 too
large: none of them writes a row. Postgres down: 503; Redis down: 200, rows stay pending.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
from flask import Blueprint, Response, jsonify, request
from redis import RedisError
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge

from core.kinds import APP_TABLES, columns_of
from db import app_rows, app_sync, ledger
from db.connection import Row
from jobs.dispatch import top_up_for
from jobs.fal.plan import storable
from listener.context import get_config, get_db, get_redis

bp = Blueprint("app_webhook", __name__)
log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
SECRET_HEADER = "X-Falback-Secret"
MAX_URL_LENGTH = 8192


class BadEvent(ValueError):
    """The body is not an event we understand; the message is fit for a 400."""


@dataclass(frozen=True)
class Event:
    type: str
    table: str
    id: str
    record: Mapping[str, Any]


@bp.errorhandler(RequestEntityTooLarge)
def too_large(_error: RequestEntityTooLarge) -> tuple[Response, int]:
    return jsonify(error=f"body larger than {request.max_content_length} bytes"), 413


@bp.post("/webhooks/app")
def receive() -> tuple[Response, int]:
    config = get_config()
    if not config.app_webhook_secret:
        return jsonify(error="the app webhook is disabled: set FALBACK_APP_WEBHOOK_SECRET"), 403
    raw = request.get_data()
    problem = authenticate(request.headers, raw, config.app_webhook_secret)
    if problem:
        log.info("app webhook rejected: %s", problem)
        return jsonify(error=problem), 401
    try:
        event = parse_event(raw)
    except BadEvent as e:
        return jsonify(error=str(e)), 400
    if event.type == "DELETE":
        return jsonify(type="DELETE", table=event.table, id=event.id, files=0), 200
    try:
        conn = get_db()
        rows: list[Row] = []
        if app_sync.app_files_exist(conn):
            rows = app_rows.upsert_app_row(conn, event.table, event.id, config.expiry_days)
        if not rows:
            # Not visible here (yet): a replica behind, or app tables in another database.
            rows = app_rows.link_files(conn, files_from_record(event), config.expiry_days)
        conn.commit()
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
        # Nothing was committed; teardown closes the connection.
        log.error("app webhook %s %s: postgres unavailable (%s)", event.table, event.id, type(e).__name__)
        return jsonify(error="database unavailable; retry later"), 503
    pending = [(int(r["id"]), str(r["kind"])) for r in rows if r["status"] == "pending"]
    answer = {
        "type": event.type,
        "table": event.table,
        "id": event.id,
        "files": len(rows),
        "queued": len(pending),
    }
    try:
        top_up_for(conn, get_redis(), config, pending)
    except RedisError as e:
        conn.rollback()
        log.warning(
            "app webhook %s %s: redis unavailable (%s); ledger %s stay pending",
            event.table,
            event.id,
            type(e).__name__,
            [i for i, _ in pending],
        )
        answer["queued"] = 0
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
        log.warning(
            "app webhook %s %s: postgres lost after commit (%s); the sweep finishes",
            event.table,
            event.id,
            type(e).__name__,
        )
    log.info(
        "app webhook %s %s %s: ledger %s, %d queued",
        event.type,
        event.table,
        event.id,
        [r["id"] for r in rows],
        answer["queued"],
    )
    return jsonify(answer), 200


def authenticate(headers: Headers, body: bytes, secret: str, now: float | None = None) -> str | None:
    """None when the request is signed (Standard Webhooks) or carries the secret header;
    else why not. Never says more than which check failed."""
    if headers.get("webhook-signature") is not None:
        return verify_standard(headers, body, secret, now)
    given = headers.get(SECRET_HEADER)
    if given is not None:
        # Werkzeug decodes header bytes as latin-1; encoding back gives the bytes sent.
        if hmac.compare_digest(given.encode("latin-1", "replace"), secret.encode("utf-8")):
            return None
        return f"wrong {SECRET_HEADER}"
    return f"missing webhook-signature (Standard Webhooks) or {SECRET_HEADER}"


def verify_standard(headers: Headers, body: bytes, secret: str, now: float | None = None) -> str | None:
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature") or ""
    if not msg_id or not timestamp:
        return "missing webhook-id or webhook-timestamp"
    if len(msg_id) > 255 or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 15:
        return "malformed webhook-id or webhook-timestamp"
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return "webhook-timestamp is more than 5 minutes from now"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode("latin-1", "replace") + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in signatures.split(" ")[:20]:
        version, _, given = entry.partition(",")
        if version == "v1" and hmac.compare_digest(given.encode("latin-1", "replace"), expected):
            return None
    return "no webhook-signature matches"


def parse_event(raw: bytes) -> Event:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadEvent("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadEvent("body must be a JSON object")
    type_ = body.get("type")
    if type_ not in ("INSERT", "UPDATE", "DELETE"):
        raise BadEvent("type must be INSERT, UPDATE or DELETE")
    table = body.get("table")
    if table not in APP_TABLES:
        raise BadEvent(f"table must be one of {', '.join(APP_TABLES)}")
    if body.get("schema", "public") != "public":
        raise BadEvent("schema must be public")
    record = body.get("record")
    if type_ == "DELETE":
        record = body.get("old_record") or record  # Supabase: record is null on DELETE
    if not isinstance(record, dict):
        raise BadEvent("record (old_record for DELETE) must be an object")
    return Event(str(type_), str(table), _record_id(record.get("id")), record)


def _record_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return str(value)
    if isinstance(value, str) and app_rows.APP_ROW_ID.fullmatch(value):
        return value
    raise BadEvent("record.id must be a positive integer or a short id string")


def files_from_record(event: Event) -> list[ledger.NewFile]:
    """The record's media URLs as linked ledger files (non-URL values are skipped)."""
    files = []
    for column in columns_of(event.table):
        url, variant = event.record.get(column.url_column), column.kind
        if not (
            isinstance(url, str)
            and url[:8].lower().startswith(("http://", "https://"))
            and len(url) <= MAX_URL_LENGTH
            and storable(url)
            and not any(c.isspace() for c in url)
        ):
            continue
        size = event.record.get(column.size_column)
        files.append(ledger.NewFile(
            source_url=url, kind=variant, source_table=event.table, source_id=event.id,
            variant=variant,
            expected_size=size if isinstance(size, int) and not isinstance(size, bool)
            and 0 <= size < 2**63 else None,
            source_created_at=_timestamp(event.record.get("created_at")),
        ))  # fmt: skip
    return files


def _timestamp(value: object) -> datetime | None:
    """Supabase sends ISO 8601; anything else means "now" (it only estimates expiry)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and 1970 <= parsed.year <= 9999 else None

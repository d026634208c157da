"""Classify a fal webhook body, and read the hints the app put on the webhook URL.

The body is signed: a body we cannot act on is refused (``MalformedWebhookError``, a 400).
The query string is not: ``table``/``id``/``variant`` (the app row the result fills) and
``fal_app`` (where the result can be fetched) are hints, and a bad hint is dropped with a
reason (``UrlHints.ignored``) rather than refused, so it can never cost signed media.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs

from core.kinds import APP_TABLES, columns_of
from db.app_rows import APP_ROW_ID
from jobs.fal.kinds import MediaKind
from jobs.fal.walker import (
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_MAX_DEPTH,
    MediaProblem,
    MediaRef,
    MediaScan,
    find_media,
)

MAX_REQUEST_ID_LENGTH = 255
# A fal model id: owner/app, optionally an endpoint path (fal-ai/kling-video/v1/pro/...).
_FAL_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){1,7}")
_LINK_PARAMS = ("table", "id", "variant")


class WebhookKind(StrEnum):
    MEDIA = "media"  # status OK with a payload: copy ``media`` (may be empty)
    PAYLOAD_ERROR = "payload_error"  # status OK, payload null: fetch the result from the queue API
    ERROR = "error"  # the request failed at fal: record ``error``, nothing to copy


class MalformedWebhookError(ValueError):
    """The body is not a fal webhook we can act on; ``str(exc)`` is fit for a 400 answer."""


@dataclass(frozen=True)
class FalWebhook:
    kind: WebhookKind
    request_id: str
    gateway_request_id: str | None
    error: str | None = None  # ERROR message, or the payload_error text
    error_payload: object = None  # ERROR details from fal (e.g. validation ``detail``)
    scan: MediaScan = MediaScan()  # what the payload references (MEDIA only)

    @property
    def media(self) -> tuple[MediaRef, ...]:
        return self.scan.media

    @property
    def problems(self) -> tuple[MediaProblem, ...]:
        return self.scan.problems

    @property
    def truncated(self) -> bool:
        return self.scan.truncated


@dataclass(frozen=True)
class AppLink:
    """Which app row a webhook belongs to, from the query string the app put on the URL."""

    source_table: str
    source_id: str  # as text: the app tables' keys may be integers, uuids or short text ids
    variant: str

    @property
    def media_kind(self) -> MediaKind:
        return MediaKind.IMAGE if self.source_table == "gen_images" else MediaKind.VIDEO


@dataclass(frozen=True)
class UrlHints:
    link: AppLink | None = None
    fal_app: str | None = None
    ignored: tuple[str, ...] = ()  # why a hint was dropped, for the delivery's note


VALID_LINKS: dict[str, frozenset[str]] = {
    table: frozenset(c.kind for c in columns_of(table)) for table in APP_TABLES
}


class _BadHint(ValueError):
    pass


# --- body -----------------------------------------------------------------------------


def load_body(raw: bytes) -> object:
    """Parse raw webhook bytes as JSON; any failure is a ``MalformedWebhookError``."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedWebhookError(f"body is not valid JSON: {type(exc).__name__}") from None


def parse_webhook(
    body: object, *, max_data_bytes: int = DEFAULT_MAX_DATA_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> FalWebhook:
    """Classify a parsed fal webhook body; raises ``MalformedWebhookError`` for a 400."""
    if not isinstance(body, dict):
        raise MalformedWebhookError("body must be a JSON object")
    request_id = _request_id(body)
    gateway = body.get("gateway_request_id")
    gateway_request_id = gateway if isinstance(gateway, str) and gateway else None
    status = body.get("status")
    payload = body.get("payload")
    if status == "ERROR":
        return FalWebhook(WebhookKind.ERROR, request_id, gateway_request_id, _error_text(body), payload)
    if status != "OK":
        raise MalformedWebhookError(f"status must be 'OK' or 'ERROR', got {_short(status)}")
    if payload is None:
        # fal could not serialise the result; it still exists (and was billed): fetch it later.
        reason = body.get("payload_error")
        text = reason if isinstance(reason, str) and reason else "payload is null"
        return FalWebhook(WebhookKind.PAYLOAD_ERROR, request_id, gateway_request_id, text)
    if not isinstance(payload, dict | list):
        raise MalformedWebhookError(
            f"payload must be an object or array when status is OK, got {type(payload).__name__}"
        )
    scan = find_media(payload, max_data_bytes=max_data_bytes, max_depth=max_depth)
    return FalWebhook(WebhookKind.MEDIA, request_id, gateway_request_id, scan=scan)


def _request_id(body: dict[str, object]) -> str:
    value = body.get("request_id")
    if not isinstance(value, str) or not value.strip():
        raise MalformedWebhookError("request_id is missing or not a non-empty string")
    if len(value) > MAX_REQUEST_ID_LENGTH:
        raise MalformedWebhookError(f"request_id is longer than {MAX_REQUEST_ID_LENGTH} chars")
    if "\x00" in value or _unencodable(value):
        raise MalformedWebhookError("request_id contains characters that cannot be stored")
    return value


def _unencodable(text: str) -> bool:
    """Postgres text holds no lone surrogates (and no NUL, checked apart)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _error_text(body: dict[str, object]) -> str:
    error = body.get("error")
    if isinstance(error, str) and error:
        return error
    return "fal reported an error without a message"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- hints on the webhook URL ---------------------------------------------------------


def parse_hints(query_string: str | bytes) -> UrlHints:
    """The app link (``table``, ``id``, ``variant``) and ``fal_app`` from the webhook URL's
    query string. Never raises: a hint that is partial, repeated or invalid is left out,
    and ``ignored`` says which and why."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("utf-8", "replace")
    try:
        params = parse_qs(query_string, keep_blank_values=True, max_num_fields=50)
    except ValueError:
        return UrlHints(ignored=("query string ignored: more than 50 parameters",))
    ignored: list[str] = []
    link = fal_app = None
    try:
        link = _app_link(params)
    except _BadHint as e:
        ignored.append(f"app link ignored: {e}")
    try:
        fal_app = _fal_app(params)
    except _BadHint as e:
        ignored.append(f"fal_app ignored: {e}")
    return UrlHints(link, fal_app, tuple(ignored))


def _app_link(params: dict[str, list[str]]) -> AppLink | None:
    present = [name for name in _LINK_PARAMS if name in params]
    if not present:
        return None
    for name in present:
        if len(params[name]) > 1:
            raise _BadHint(f"query parameter {name!r} is given more than once")
    missing = [name for name in _LINK_PARAMS if name not in params]
    if missing:
        raise _BadHint(f"table, id and variant go together; missing {', '.join(missing)}")
    table, row_id, variant = (params[name][0] for name in _LINK_PARAMS)
    variants = VALID_LINKS.get(table)
    if variants is None:
        raise _BadHint(f"table must be one of {', '.join(sorted(VALID_LINKS))}")
    if variant not in variants:
        raise _BadHint(f"variant for {table} must be one of {', '.join(sorted(variants))}")
    if not APP_ROW_ID.fullmatch(row_id):
        raise _BadHint(
            "id must be an integer, a uuid or a short text id (letters, digits, '-' and '_', up to 64)"
        )
    return AppLink(table, row_id, variant)


def _fal_app(params: dict[str, list[str]]) -> str | None:
    """The fal model id; its endpoint path can tell an upscaler, the queue URL uses only
    owner/app."""
    values = params.get("fal_app")
    if not values:
        return None
    if len(values) > 1:
        raise _BadHint("query parameter 'fal_app' is given more than once")
    if not _FAL_APP.fullmatch(values[0]):
        raise _BadHint("fal_app must be a fal model id like fal-ai/kling-video")
    return values[0]

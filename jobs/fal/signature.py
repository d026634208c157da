"""Verify fal webhook signatures (ED25519 over a JWKS), exactly as fal documents them.

Signed message: ``request_id \\n user_id \\n timestamp \\n hex(sha256(raw body))``, checked
against every key in fal's JWKS (jobs.fal.jwks) because no key id is sent. Nothing here
raises on bad input: ``verify_webhook`` returns a ``VerifyResult`` with a machine-readable
reason.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from jobs.fal.jwks import JwksCache, JwksUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_LEEWAY_SECONDS = 300

HEADER_REQUEST_ID = "X-Fal-Webhook-Request-Id"
HEADER_USER_ID = "X-Fal-Webhook-User-Id"
HEADER_TIMESTAMP = "X-Fal-Webhook-Timestamp"
HEADER_SIGNATURE = "X-Fal-Webhook-Signature"
_HEADERS = (HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)

_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}")
_SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{128}")  # 64-byte ED25519 signature, hex


class Reason(StrEnum):
    """Why a webhook was accepted or rejected (stable strings, safe for logs and metrics)."""

    OK = "ok"
    MISSING_HEADER = "missing_header"
    BAD_TIMESTAMP = "bad_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_SIGNATURE_ENCODING = "bad_signature_encoding"
    BAD_SIGNATURE = "bad_signature"
    WRONG_USER = "wrong_user"
    KEYS_UNAVAILABLE = "keys_unavailable"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify_webhook``. ``detail`` never contains the signature or the body."""

    reason: Reason
    detail: str = ""
    request_id: str | None = None
    user_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    @property
    def retryable(self) -> bool:
        """True when the sender should retry (answer 503), not be refused (401)."""
        return self.reason is Reason.KEYS_UNAVAILABLE


class HeaderSource(Protocol):
    """Anything with ``get(name) -> str | None``: werkzeug ``Headers``, a plain dict."""

    def get(self, key: str, /) -> str | None: ...


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """Build the exact bytes fal signs (no trailing newline)."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([request_id, user_id, timestamp, digest]).encode("utf-8")


def verify_webhook(
    headers: HeaderSource,
    body: bytes,
    jwks: JwksCache,
    *,
    leeway: int = DEFAULT_LEEWAY_SECONDS,
    expected_user_id: str | None = None,
    now: float | None = None,
) -> VerifyResult:
    """Check a fal webhook's headers and signature over the raw ``body`` bytes.

    ``now`` is Unix time (defaults to ``time.time()``); ``expected_user_id`` pins the
    sender to the operator's fal account, since any fal user can sign webhooks to us.
    """
    values = [_header(headers, name) for name in _HEADERS]
    request_id, user_id, timestamp, signature = values
    if request_id is None or user_id is None or timestamp is None or signature is None:
        missing = [name for name, value in zip(_HEADERS, values, strict=True) if value is None]
        return _reject(Reason.MISSING_HEADER, f"missing {', '.join(missing)}", request_id, user_id)
    now = time.time() if now is None else now
    precheck = _precheck(timestamp, signature, user_id, leeway, expected_user_id, now)
    if precheck is not None:
        return _reject(precheck[0], precheck[1], request_id, user_id)
    try:
        message = signed_message(request_id, user_id, timestamp, body)
    except UnicodeEncodeError:
        return _reject(Reason.BAD_SIGNATURE, "header not UTF-8 encodable", request_id, user_id)
    return _verify_with_keys(message, bytes.fromhex(signature), jwks, request_id, user_id)


def _header(headers: HeaderSource, name: str) -> str | None:
    # werkzeug Headers are case-insensitive; plain dicts from other stacks are often lowercased.
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value if isinstance(value, str) and value else None


def _precheck(
    timestamp: str,
    signature: str,
    user_id: str,
    leeway: int,
    expected_user_id: str | None,
    now: float,
) -> tuple[Reason, str] | None:
    """Cheap checks, done before any key fetch or crypto."""
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        return Reason.BAD_TIMESTAMP, "timestamp is not Unix epoch seconds"
    skew = now - int(timestamp)
    if abs(skew) > leeway:
        direction = "old" if skew > 0 else "ahead"
        return Reason.STALE_TIMESTAMP, f"timestamp {abs(skew):.0f}s {direction} (leeway {leeway}s)"
    if not _SIGNATURE_RE.fullmatch(signature):
        return Reason.BAD_SIGNATURE_ENCODING, "signature is not 128 hex characters"
    if expected_user_id is not None and user_id != expected_user_id:
        return Reason.WRONG_USER, "user id does not match the configured fal user"
    return None


def _verify_with_keys(
    message: bytes, signature: bytes, jwks: JwksCache, request_id: str, user_id: str
) -> VerifyResult:
    try:
        keys = jwks.keys()
    except JwksUnavailableError as exc:
        return _reject(Reason.KEYS_UNAVAILABLE, str(exc), request_id, user_id)
    if _any_key_verifies(keys, message, signature):
        return VerifyResult(Reason.OK, "", request_id, user_id)
    # fal sends no key id, so a miss may mean a rotated key: refetch once (rate-limited).
    newer = jwks.refresh(keys)
    if newer is not None and _any_key_verifies(newer, message, signature):
        return VerifyResult(Reason.OK, "verified after JWKS refresh", request_id, user_id)
    return _reject(Reason.BAD_SIGNATURE, "no fal key verifies the signature", request_id, user_id)


def _any_key_verifies(keys: Sequence[Ed25519PublicKey], message: bytes, signature: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def _reject(reason: Reason, detail: str, request_id: str | None, user_id: str | None) -> VerifyResult:
    # request_id is unauthenticated here: %r escapes it, the cut keeps one line short.
    shown = None if request_id is None else request_id[:100]
    logger.info("fal webhook rejected: %s (%s) request_id=%r", reason.value, detail, shown)
    return VerifyResult(reason, detail, request_id, user_id)

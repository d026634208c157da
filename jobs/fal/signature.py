"""Verify fal webhook signatures (ED25519 over a JWKS), exactly as fal documents them.

Signed message: ``request_id \\n user_id \\n timestamp \\n hex(sha256(raw body))``, checked
against every key in fal's JWKS because no key id is sent. Nothing here raises on bad
input: ``verify_webhook`` returns a ``VerifyResult`` with a machine-readable reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

logger = logging.getLogger(__name__)

MAX_JWKS_AGE_SECONDS = 24 * 3600  # fal: "Do not cache longer than 24 hours".
DEFAULT_MIN_REFRESH_INTERVAL_SECONDS = 60.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0
DEFAULT_LEEWAY_SECONDS = 300

HEADER_REQUEST_ID = "X-Fal-Webhook-Request-Id"
HEADER_USER_ID = "X-Fal-Webhook-User-Id"
HEADER_TIMESTAMP = "X-Fal-Webhook-Timestamp"
HEADER_SIGNATURE = "X-Fal-Webhook-Signature"
_HEADERS = (HEADER_REQUEST_ID, HEADER_USER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)

_MAX_JWKS_BYTES = 256 * 1024  # a JWKS is a few hundred bytes; don't read an endless body
_MAX_KEYS = 64
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


class JwksUnavailableError(Exception):
    """No usable key: every JWKS URL failed and nothing fresh is cached."""


@dataclass(frozen=True)
class _KeySet:
    keys: tuple[Ed25519PublicKey, ...]
    fetched_at: float


class JwksCache:
    """Thread-safe cache of fal's webhook public keys.

    Keys are kept at most ``max_age`` seconds (capped at 24 h, as fal asks); expired keys
    are dropped rather than trusted, so a JWKS outage reads as "keys unavailable" (503, fal
    retries) instead of verifying against keys fal may have revoked. Network fetches are
    single-flight and at most one per ``min_refresh_interval``, so a burst of bad signatures
    or a fal outage cannot turn into a burst of JWKS requests.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        session: requests.Session | None = None,
        max_age: float = MAX_JWKS_AGE_SECONDS,
        min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL_SECONDS,
        timeout: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("JwksCache needs at least one JWKS URL")
        if not 0 < max_age <= MAX_JWKS_AGE_SECONDS:
            raise ValueError(f"max_age must be in (0, {MAX_JWKS_AGE_SECONDS}] s, got {max_age}")
        if min_refresh_interval < 0 or timeout <= 0:
            raise ValueError("min_refresh_interval must be >= 0 and timeout > 0")
        self.urls = tuple(urls)
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._state: _KeySet | None = None
        self._last_forced: float | None = None  # last refresh() that went to the network
        self._last_failure: float | None = None  # last fetch that got no keys from any URL
        self._state_lock = threading.Lock()  # guards the three fields above; held briefly
        self._fetch_lock = threading.Lock()  # single-flight network fetch; held for I/O

    def keys(self) -> tuple[Ed25519PublicKey, ...]:
        """Return fresh keys, fetching when none are cached or they expired.

        Raises ``JwksUnavailableError`` when no fresh key can be had.
        """
        fresh = self._fresh_keys()
        if fresh is not None:
            return fresh
        with self._fetch_lock:
            fresh = self._fresh_keys()  # another thread may have fetched while we waited
            if fresh is None and self._fetch_allowed(forced=False):
                fresh = self._fetch()
        if fresh is None:
            raise JwksUnavailableError("no fresh fal JWKS key (fetch failed or rate-limited)")
        return fresh

    def refresh(self, stale: tuple[Ed25519PublicKey, ...]) -> tuple[Ed25519PublicKey, ...] | None:
        """Force one refetch after ``stale`` failed to verify (fal may have rotated keys).

        Returns keys newer than ``stale`` (possibly fetched by another thread meanwhile),
        or None when rate-limited or the fetch failed.
        """
        with self._fetch_lock:
            current = self._fresh_keys()
            if current is not None and current is not stale:
                return current
            if not self._fetch_allowed(forced=True):
                logger.info("fal JWKS refresh skipped: rate-limited")
                return None
            with self._state_lock:
                self._last_forced = self._clock()
            return self._fetch()

    def _fresh_keys(self) -> tuple[Ed25519PublicKey, ...] | None:
        with self._state_lock:
            state = self._state
        if state is None or self._clock() - state.fetched_at >= self.max_age:
            return None
        return state.keys

    def _fetch_allowed(self, *, forced: bool) -> bool:
        """Back off after a failed fetch (outage), and space out forced refreshes."""
        with self._state_lock:
            recent = [self._last_failure, self._last_forced if forced else None]
        now = self._clock()
        return all(t is None or now - t >= self.min_refresh_interval for t in recent)

    def _fetch(self) -> tuple[Ed25519PublicKey, ...] | None:
        """Try each URL in order; keep the first non-empty key set. Caller holds _fetch_lock."""
        for url in self.urls:
            keys = self._fetch_one(url)
            if keys:
                with self._state_lock:
                    self._state = _KeySet(keys, self._clock())
                    self._last_failure = None
                logger.info("fal JWKS loaded from %s: %d key(s)", url, len(keys))
                return keys
        with self._state_lock:
            self._last_failure = self._clock()
        logger.warning("fal JWKS unavailable from all %d URL(s)", len(self.urls))
        return None

    def _fetch_one(self, url: str) -> tuple[Ed25519PublicKey, ...]:
        try:
            with self._session.get(url, timeout=self.timeout, stream=True) as resp:
                if resp.status_code != 200:
                    logger.warning("fal JWKS %s answered HTTP %d", url, resp.status_code)
                    return ()
                body = _read_capped(resp, _MAX_JWKS_BYTES)
            if body is None:
                logger.warning("fal JWKS %s: body larger than %d bytes", url, _MAX_JWKS_BYTES)
                return ()
            return parse_jwks(json.loads(body))
        except (requests.RequestException, ValueError, RecursionError) as exc:
            logger.warning("fal JWKS %s failed: %s", url, type(exc).__name__)
            return ()


def _read_capped(resp: requests.Response, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_content(chunk_size=16384):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_jwks(document: object) -> tuple[Ed25519PublicKey, ...]:
    """Return the usable ED25519 keys of a JWKS document; malformed entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        logger.warning("fal JWKS document has no 'keys' list")
        return ()
    keys: list[Ed25519PublicKey] = []
    for entry in document["keys"][:_MAX_KEYS]:
        key = _parse_jwk(entry)
        if key is not None:
            keys.append(key)
    return tuple(keys)


def _parse_jwk(entry: object) -> Ed25519PublicKey | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("x"), str):
        return None
    # kty/crv are optional in what fal serves; when present they must name Ed25519.
    if entry.get("kty", "OKP") != "OKP" or entry.get("crv", "Ed25519") != "Ed25519":
        return None
    raw = _b64url_decode(entry["x"])
    if raw is None or len(raw) != 32:
        logger.warning("fal JWKS key %r skipped: x is not 32 base64url bytes", entry.get("kid"))
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return None


def _b64url_decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


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

"""fal's webhook signing keys: fetch the JWKS, keep it at most 24 h, refetch on demand.

fal sends no key id, so verification tries every key (jobs.fal.signature); this module
only has to hand out the current ED25519 keys without turning a fal outage or a burst of
bad signatures into a burst of JWKS requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from jobs.fal.api import read_capped

logger = logging.getLogger(__name__)

MAX_JWKS_AGE_SECONDS = 24 * 3600  # fal: "Do not cache longer than 24 hours".
DEFAULT_MIN_REFRESH_INTERVAL_SECONDS = 60.0
DEFAULT_FETCH_TIMEOUT_SECONDS = 10.0

_MAX_JWKS_BYTES = 256 * 1024  # a JWKS is a few hundred bytes; don't read an endless body
_MAX_KEYS = 64


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
                body = read_capped(resp, _MAX_JWKS_BYTES)
            if body is None:
                logger.warning("fal JWKS %s: body larger than %d bytes", url, _MAX_JWKS_BYTES)
                return ()
            return parse_jwks(json.loads(body))
        except (requests.RequestException, ValueError, RecursionError) as exc:
            logger.warning("fal JWKS %s failed: %s", url, type(exc).__name__)
            return ()


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

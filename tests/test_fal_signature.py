"""fal webhook signature verification against a local JWKS server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devkit.jwks_server import signed_message as devkit_signed_message
from jobs.fal.jwks import MAX_JWKS_AGE_SECONDS, JwksCache, parse_jwks
from jobs.fal.signature import Reason, VerifyResult, signed_message, verify_webhook
from tests.fakes.jwks_server import JwksServer, jwk, jwks, signed_headers

NOW = 1_700_000_000
BODY = b'{"request_id":"req-1","status":"OK","payload":{"images":[]}}'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def server(key: Ed25519PrivateKey) -> Iterator[JwksServer]:
    with JwksServer(jwks(key)) as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_cache(urls: list[str], session: requests.Session, clock: FakeClock) -> JwksCache:
    return JwksCache(urls, session=session, clock=clock, min_refresh_interval=60, timeout=2)


@pytest.fixture
def cache(server: JwksServer, session: requests.Session, clock: FakeClock) -> JwksCache:
    return make_cache([server.url], session, clock)


def verify(
    headers: dict[str, str],
    cache: JwksCache,
    body: bytes = BODY,
    **kwargs: object,
) -> VerifyResult:
    return verify_webhook(headers, body, cache, now=NOW, **kwargs)  # type: ignore[arg-type]


def test_valid_signature(key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer) -> None:
    result = verify(signed_headers(key, BODY, timestamp=NOW), cache)
    assert result == VerifyResult(Reason.OK, "", "req-1", "user-1")
    assert result.ok and not result.retryable
    assert server.request_count == 1


def test_keys_are_cached_between_requests(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer
) -> None:
    for i in range(3):
        headers = signed_headers(key, BODY, timestamp=NOW, request_id=f"r{i}")
        assert verify(headers, cache).ok
    assert server.request_count == 1


def test_tampered_body(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    result = verify(headers, cache, body=BODY.replace(b"OK", b"KO"))
    assert result.reason is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "field", ["X-Fal-Webhook-Request-Id", "X-Fal-Webhook-User-Id", "X-Fal-Webhook-Timestamp"]
)
def test_tampered_signed_header(key: Ed25519PrivateKey, cache: JwksCache, field: str) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    headers[field] = str(NOW - 1) if field.endswith("Timestamp") else "someone-else"
    assert verify(headers, cache).reason is Reason.BAD_SIGNATURE


def test_wrong_key(cache: JwksCache) -> None:
    other = Ed25519PrivateKey.generate()
    result = verify(signed_headers(other, BODY, timestamp=NOW), cache)
    assert result.reason is Reason.BAD_SIGNATURE
    assert not result.retryable


def test_key_rotation_forces_one_rate_limited_refresh(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    assert verify(signed_headers(key, BODY, timestamp=NOW), cache).ok
    new_key = Ed25519PrivateKey.generate()
    server.set_document(jwks(new_key))

    result = verify(signed_headers(new_key, BODY, timestamp=NOW), cache)
    assert result.ok and result.detail == "verified after JWKS refresh"
    assert server.request_count == 2

    # The old key is gone now; failing again within the window must not refetch.
    clock.advance(59)
    assert verify(signed_headers(key, BODY, timestamp=NOW), cache).reason is Reason.BAD_SIGNATURE
    assert server.request_count == 2
    # The new key stays cached and verifies without a fetch.
    assert verify(signed_headers(new_key, BODY, timestamp=NOW), cache).ok
    assert server.request_count == 2

    clock.advance(2)  # window over: one more forced refresh is allowed
    assert verify(signed_headers(key, BODY, timestamp=NOW), cache).reason is Reason.BAD_SIGNATURE
    assert server.request_count == 3


def test_refresh_that_brings_no_new_key_is_still_rate_limited(cache: JwksCache, server: JwksServer) -> None:
    forger = Ed25519PrivateKey.generate()
    for _ in range(5):
        result = verify(signed_headers(forger, BODY, timestamp=NOW), cache)
        assert result.reason is Reason.BAD_SIGNATURE
    assert server.request_count == 2  # initial load + one forced refresh


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_timestamp_outside_leeway(key: Ed25519PrivateKey, cache: JwksCache, offset: int) -> None:
    result = verify(signed_headers(key, BODY, timestamp=NOW + offset), cache)
    assert result.reason is Reason.STALE_TIMESTAMP
    assert ("ahead" if offset > 0 else "old") in result.detail


@pytest.mark.parametrize("offset", [-300, -299, 0, 299, 300])
def test_timestamp_inside_leeway(key: Ed25519PrivateKey, cache: JwksCache, offset: int) -> None:
    assert verify(signed_headers(key, BODY, timestamp=NOW + offset), cache).ok


def test_leeway_is_configurable(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW - 61)
    assert verify(headers, cache, leeway=60).reason is Reason.STALE_TIMESTAMP
    assert verify(headers, cache, leeway=61).ok


@pytest.mark.parametrize(
    "name",
    [
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-User-Id",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-Signature",
    ],
)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_header(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer, name: str, how: str
) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    if how == "absent":
        del headers[name]
    else:
        headers[name] = ""
    result = verify(headers, cache)
    assert result.reason is Reason.MISSING_HEADER
    assert name in result.detail
    assert server.request_count == 0  # rejected before any key fetch


def test_all_headers_missing(cache: JwksCache) -> None:
    result = verify({}, cache)
    assert result == VerifyResult(
        Reason.MISSING_HEADER,
        "missing X-Fal-Webhook-Request-Id, X-Fal-Webhook-User-Id, "
        "X-Fal-Webhook-Timestamp, X-Fal-Webhook-Signature",
    )


@pytest.mark.parametrize(
    "timestamp", ["abc", "1.7e9", "1700000000.0", "-1700000000", " 1700000000", "+1700000000"]
)
def test_non_numeric_timestamp(key: Ed25519PrivateKey, cache: JwksCache, timestamp: str) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    headers["X-Fal-Webhook-Timestamp"] = timestamp
    assert verify(headers, cache).reason is Reason.BAD_TIMESTAMP


def test_huge_timestamp_is_bad_not_a_crash(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    headers["X-Fal-Webhook-Timestamp"] = "9" * 5000
    assert verify(headers, cache).reason is Reason.BAD_TIMESTAMP


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "zz" + s[2:],  # non-hex characters
        lambda s: s[:-2],  # too short
        lambda s: s + "00",  # too long
        lambda s: s[:64] + " " + s[64:-1],  # whitespace (bytes.fromhex would accept it)
        lambda s: "0x" + s[2:],
    ],
    ids=["non-hex", "short", "long", "space", "0x"],
)
def test_signature_encoding(key: Ed25519PrivateKey, cache: JwksCache, mangle: object) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    headers["X-Fal-Webhook-Signature"] = mangle(headers["X-Fal-Webhook-Signature"])  # type: ignore[operator]
    assert verify(headers, cache).reason is Reason.BAD_SIGNATURE_ENCODING


def test_uppercase_hex_signature_is_accepted(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    headers["X-Fal-Webhook-Signature"] = headers["X-Fal-Webhook-Signature"].upper()
    assert verify(headers, cache).ok


def test_pinned_user(key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer) -> None:
    mine = signed_headers(key, BODY, timestamp=NOW, user_id="me")
    theirs = signed_headers(key, BODY, timestamp=NOW, user_id="someone-else")
    assert verify(mine, cache, expected_user_id="me").ok
    result = verify(theirs, cache, expected_user_id="me")
    assert result.reason is Reason.WRONG_USER
    assert result.user_id == "someone-else"
    assert verify(theirs, cache).ok  # no pin configured: any fal user verifies


def test_unencodable_header_is_rejected_not_raised(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    headers["X-Fal-Webhook-User-Id"] = "\udc80"
    assert verify(headers, cache).reason is Reason.BAD_SIGNATURE


def test_lowercase_plain_dict_headers(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    headers = {k.lower(): v for k, v in signed_headers(key, BODY, timestamp=NOW).items()}
    assert verify(headers, cache).ok


def test_werkzeug_headers_are_case_insensitive(key: Ed25519PrivateKey, cache: JwksCache) -> None:
    from werkzeug.datastructures import Headers

    headers = Headers({k.upper(): v for k, v in signed_headers(key, BODY, timestamp=NOW).items()})
    assert verify_webhook(headers, BODY, cache, now=NOW).ok


def test_jwks_server_down_with_empty_cache(
    key: Ed25519PrivateKey, session: requests.Session, clock: FakeClock
) -> None:
    srv = JwksServer(jwks(key)).start()
    url = srv.url
    srv.stop()  # nothing listens on the port any more
    cache = make_cache([url], session, clock)
    result = verify(signed_headers(key, BODY, timestamp=NOW), cache)
    assert result.reason is Reason.KEYS_UNAVAILABLE
    assert result.retryable and not result.ok


def test_jwks_error_status_with_empty_cache_is_rate_limited(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    server.set_status(503)
    headers = signed_headers(key, BODY, timestamp=NOW)
    assert verify(headers, cache).reason is Reason.KEYS_UNAVAILABLE
    assert verify(headers, cache).reason is Reason.KEYS_UNAVAILABLE
    assert server.request_count == 1  # the second call answered fast, without a fetch

    server.set_status(200)
    clock.advance(60)
    assert verify(headers, cache).ok
    assert server.request_count == 2


@pytest.mark.parametrize(
    "document",
    [{"keys": []}, {"nope": 1}, [], {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!"}]}],
)
def test_jwks_without_usable_keys(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer, document: object
) -> None:
    server.set_document(document)
    assert verify(signed_headers(key, BODY, timestamp=NOW), cache).reason is Reason.KEYS_UNAVAILABLE


def test_oversized_jwks_is_refused(key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer) -> None:
    server.set_document({"keys": [jwk(key)], "padding": "x" * 300_000})
    assert verify(signed_headers(key, BODY, timestamp=NOW), cache).reason is Reason.KEYS_UNAVAILABLE


def test_fallback_url_is_used_when_primary_fails(
    key: Ed25519PrivateKey, server: JwksServer, session: requests.Session, clock: FakeClock
) -> None:
    with JwksServer() as primary:
        primary.set_status(500)
        cache = make_cache([primary.url, server.url], session, clock)
        assert verify(signed_headers(key, BODY, timestamp=NOW), cache).ok
        assert (primary.request_count, server.request_count) == (1, 1)


def test_cache_age_is_honoured(
    key: Ed25519PrivateKey, session: requests.Session, server: JwksServer, clock: FakeClock
) -> None:
    cache = JwksCache([server.url], session=session, clock=clock, max_age=3600)
    headers = signed_headers(key, BODY, timestamp=NOW)
    assert verify(headers, cache).ok
    clock.advance(3599)
    assert verify(headers, cache).ok
    assert server.request_count == 1
    clock.advance(1)  # now exactly max_age old: refetch
    assert verify(headers, cache).ok
    assert server.request_count == 2


def test_expired_keys_are_not_used_when_jwks_is_down(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer, clock: FakeClock
) -> None:
    headers = signed_headers(key, BODY, timestamp=NOW)
    assert verify(headers, cache).ok
    server.set_status(503)
    clock.advance(MAX_JWKS_AGE_SECONDS)
    assert verify(headers, cache).reason is Reason.KEYS_UNAVAILABLE


def test_several_keys_only_one_valid(key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer) -> None:
    others = [Ed25519PrivateKey.generate() for _ in range(3)]
    keys: list[object] = [
        {"kty": "RSA", "n": "abc", "e": "AQAB"},  # not an Ed25519 key
        {"kty": "OKP", "crv": "X25519", "x": jwk(others[0])["x"]},  # wrong curve
        {"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ"},  # too short
        "not-an-object",
        jwk(others[0], "a"),
        jwk(others[1], "b"),
        jwk(key, "c"),
        jwk(others[2], "d"),
    ]
    server.set_document({"keys": keys})
    assert verify(signed_headers(key, BODY, timestamp=NOW), cache).ok
    assert server.request_count == 1


def test_padded_base64url_key_is_accepted(key: Ed25519PrivateKey) -> None:
    padded = dict(jwk(key), x=jwk(key)["x"] + "=")
    assert len(parse_jwks({"keys": [padded]})) == 1


def test_cache_rejects_max_age_over_24h() -> None:
    with pytest.raises(ValueError, match="max_age"):
        JwksCache(["https://rest.fal.ai/.well-known/jwks.json"], max_age=MAX_JWKS_AGE_SECONDS + 1)
    with pytest.raises(ValueError, match="at least one"):
        JwksCache([])


def test_concurrent_cold_start_fetches_once(
    key: Ed25519PrivateKey, cache: JwksCache, server: JwksServer
) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def worker(i: int) -> None:
        headers = signed_headers(key, BODY, timestamp=NOW, request_id=f"r{i}")
        barrier.wait()
        results.append(verify(headers, cache).ok)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 16
    assert server.request_count == 1


def test_never_logs_signature_or_body(
    key: Ed25519PrivateKey, cache: JwksCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = signed_headers(key, BODY, timestamp=NOW)
    forged = signed_headers(Ed25519PrivateKey.generate(), BODY, timestamp=NOW)
    stale = signed_headers(key, BODY, timestamp=NOW - 999)
    for headers in (good, forged, stale):
        verify(headers, cache)
    assert "fal webhook rejected: bad_signature" in caplog.text
    for headers in (good, forged, stale):
        assert headers["X-Fal-Webhook-Signature"] not in caplog.text
    assert BODY.decode() not in caplog.text and "images" not in caplog.text


def test_the_dev_kit_signs_the_message_the_verifier_checks() -> None:
    """devkit/jwks_server.py (used by the demo) spells fal's signed message itself, since the
    dev kit may not import jobs: both spellings must agree byte for byte."""
    for body in (b"", BODY, b'{"a": "\xc3\xa9"}'):
        assert devkit_signed_message("r-1", "u-1", "1700000000", body) == signed_message(
            "r-1", "u-1", "1700000000", body
        )

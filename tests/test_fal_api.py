"""fal's APIs called with FAL_KEY (jobs.fal.api): the queue result and the CDN token, against
a local stand-in that answers as queue.fal.run and rest.fal.ai do."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from core.config import Config
from jobs.errors import PermanentError, TransientError
from jobs.fal.api import (
    CdnToken,
    FetchFailed,
    ResultUnavailable,
    body_limit,
    request_cdn_token,
    request_result,
    unfetchable_reason,
)
from tests.fakes.fal_queue_server import FalQueueServer

KEY = "key-id:key-secret"


@pytest.fixture
def fal() -> Iterator[FalQueueServer]:
    with FalQueueServer(KEY) as server:
        yield server


@pytest.fixture
def api_config(fal: FalQueueServer) -> Config:
    return Config(
        fal_key=KEY,
        fal_queue_base_url=fal.base_url,
        fal_rest_base_url=fal.base_url,
        connect_timeout=2.0,
        read_timeout=5.0,
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --- the queue result ------------------------------------------------------------------


def test_a_result_is_fetched_from_owner_app_with_the_key(fal: FalQueueServer, api_config: Config) -> None:
    fal.set_result("fal-ai/kling-video", "req%2F1%20x", {"video": {"url": "https://v3.fal.media/a.mp4"}})
    result = request_result(api_config, "fal-ai/kling-video/v2/master/text-to-video", "req/1 x")
    assert result == {"video": {"url": "https://v3.fal.media/a.mp4"}}
    # owner/app only (never the endpoint path), the request id quoted as one segment.
    assert fal.requests == [("/fal-ai/kling-video/requests/req%2F1%20x", f"Key {KEY}")]


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (202, FetchFailed, "still in progress (HTTP 202)"),
        (429, FetchFailed, "answered HTTP 429"),
        (503, FetchFailed, "answered HTTP 503"),
        (403, ResultUnavailable, "fal refused FAL_KEY (HTTP 403)"),
        (410, ResultUnavailable, "answered HTTP 410"),
    ],
)
def test_answers_are_classified(
    status: int, error: type[Exception], message: str, fal: FalQueueServer, api_config: Config
) -> None:
    fal.set_result("fal-ai/flux", "r1", {"detail": "x"}, status=status)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        request_result(api_config, "fal-ai/flux", "r1")


def test_a_wrong_key_a_missing_result_and_a_non_json_body_are_unavailable(
    fal: FalQueueServer, api_config: Config
) -> None:
    with pytest.raises(ResultUnavailable, match=r"fal refused FAL_KEY \(HTTP 401\)"):
        request_result(api_config.replace(fal_key="wrong"), "fal-ai/flux", "r1")
    with pytest.raises(ResultUnavailable, match="no such result"):
        request_result(api_config, "fal-ai/flux", "r1")
    fal.set_result("fal-ai/flux", "r1", b"<html>not json</html>")
    with pytest.raises(ResultUnavailable, match="not JSON"):
        request_result(api_config, "fal-ai/flux", "r1")


def test_a_result_over_the_body_limit_is_not_read_whole(fal: FalQueueServer, api_config: Config) -> None:
    config = api_config.replace(max_data_uri_bytes=1024)
    fal.set_result("fal-ai/flux", "r1", {"pad": "x" * (body_limit(config) + 10)})
    with pytest.raises(ResultUnavailable, match=f"larger than {body_limit(config)} bytes"):
        request_result(config, "fal-ai/flux", "r1")


def test_an_unreachable_queue_api_is_worth_a_retry(api_config: Config) -> None:
    with pytest.raises(FetchFailed, match="could not reach fal's queue API"):
        request_result(api_config.replace(fal_queue_base_url=closed_port_url()), "fal-ai/flux", "r1")


def test_unfetchable_reason_says_what_is_missing(api_config: Config) -> None:
    assert unfetchable_reason(api_config, "fal-ai/flux") is None
    assert "FAL_KEY is not set" in str(unfetchable_reason(api_config.replace(fal_key=None), "a/b"))
    assert "add ?fal_app=<owner>/<app>" in str(unfetchable_reason(api_config, None))


# --- the CDN token ---------------------------------------------------------------------


def test_a_cdn_token_is_asked_for_with_the_key(fal: FalQueueServer, api_config: Config) -> None:
    token = request_cdn_token(requests.Session(), api_config)
    assert token == CdnToken("cdn-token", 4070908800.0)  # 2099-01-01T00:00:00Z
    assert fal.requests == [("/storage/auth/token?storage_type=fal-cdn-v3", f"Key {KEY}")]


@pytest.mark.parametrize(
    ("expires_at", "expected"),
    [(1_900_000_000, 1_900_000_000.0), (1.9e9, 1.9e9), ("2030-01-01T00:00:00+00:00", 1893456000.0)],
)
def test_token_expiry_forms(
    expires_at: object, expected: float, fal: FalQueueServer, api_config: Config
) -> None:
    fal.token_answer = (200, {"token": "t", "expires_at": expires_at})
    assert request_cdn_token(requests.Session(), api_config).expires_at == expected


@pytest.mark.parametrize(
    "raw",
    [
        b'{"token": "t"}',
        b'{"token": "t", "expires_at": "soon"}',
        b'{"token": "t", "expires_at": true}',
        b'{"token": "t", "expires_at": 1e400}',
        b'{"token": "t", "expires_at": 1' + b"0" * 400 + b"}",
    ],
)
def test_an_unreadable_expiry_means_an_hour(raw: bytes, fal: FalQueueServer, api_config: Config) -> None:
    fal.token_raw = raw
    token = request_cdn_token(requests.Session(), api_config)
    assert token.token == "t"
    assert abs(token.expires_at - (time.time() + 3600)) < 60


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"expires_at": 1}),
        (200, {"token": ""}),
        (200, ["token"]),
        (200, b"not json"),
        (500, {"token": "t"}),
    ],
)
def test_an_answer_without_a_token_is_transient(
    status: int, body: object, fal: FalQueueServer, api_config: Config
) -> None:
    fal.token_answer = (status, body)
    if isinstance(body, bytes):
        fal.token_raw = body
    with pytest.raises(TransientError, match=f"fal answered {status} without a CDN token"):
        request_cdn_token(requests.Session(), api_config)


def test_a_refused_key_is_permanent_and_an_outage_transient(api_config: Config) -> None:
    with pytest.raises(PermanentError, match=r"fal refused FAL_KEY when asked for a CDN token \(HTTP 401\)"):
        request_cdn_token(requests.Session(), api_config.replace(fal_key="wrong"))
    with pytest.raises(TransientError, match="could not get a fal CDN token"):
        request_cdn_token(requests.Session(), api_config.replace(fal_rest_base_url=closed_port_url()))

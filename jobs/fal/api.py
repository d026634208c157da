"""fal's HTTP APIs that falback calls with FAL_KEY: the queue result and the CDN token.

- ``GET {FAL_QUEUE_BASE_URL}/{owner}/{app}/requests/{request_id}``: a result fal could not
  put in its webhook (``payload_error``). fal keeps it about an hour, six minutes when it
  is 10 KB or larger.
- ``POST {FAL_REST_BASE_URL}/storage/auth/token?storage_type=fal-cdn-v3``: a bearer token
  for files behind an ACL on fal's CDN (``v3b.fal.media``), valid up to 30 days.

Both send ``Authorization: Key {FAL_KEY}``; errors carry messages safe to store (never the
key). No web framework or queue here: the callers decide what a failure means to them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import requests

from core.config import Config
from jobs.errors import PermanentError, TransientError


class FetchFailed(Exception):
    """Worth another try (timeout, 5xx, 429, still in progress); the message is safe to store."""


class ResultUnavailable(Exception):
    """Trying again cannot help (404, key refused, not JSON); the message is safe to store."""


@dataclass(frozen=True)
class CdnToken:
    token: str
    expires_at: float  # Unix time


def read_capped(response: requests.Response, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def body_limit(config: Config) -> int:
    """Largest fal webhook body or queue result accepted: room for one data: URI at the
    configured cap (base64 is 4/3 of the bytes) plus 1 MiB of JSON."""
    return 1024 * 1024 + 4 * -(-config.max_data_uri_bytes // 3)


def unfetchable_reason(config: Config, fal_app: str | None) -> str | None:
    """Why the queue API cannot be asked for this result, or None when it can."""
    if not config.fal_key:
        return "result not fetched: FAL_KEY is not set (fal's queue API needs it)"
    if not fal_app:
        return (
            "result not fetched: the webhook URL has no fal_app parameter;"
            " add ?fal_app=<owner>/<app> (e.g. fal-ai/kling-video) to it"
        )
    return None


def request_result(config: Config, fal_app: str, request_id: str) -> object:
    """GET the result from fal's queue API; raise FetchFailed or ResultUnavailable."""
    # Result URLs take owner/app only, never the endpoint path (fal's queue API docs).
    owner_app = "/".join(fal_app.split("/")[:2])
    url = f"{config.fal_queue_base_url}/{owner_app}/requests/{quote(request_id, safe='')}"
    session = requests.Session()
    session.max_redirects = 5  # requests drops Authorization on a redirect to another host
    try:
        with session.get(
            url,
            headers={"Authorization": f"Key {config.fal_key}", "Accept": "application/json"},
            timeout=(config.connect_timeout, config.read_timeout),
            stream=True,
        ) as response:
            status = response.status_code
            if status == 200:
                body = read_capped(response, body_limit(config))
            elif status == 202:
                raise FetchFailed("fal says the request is still in progress (HTTP 202)")
            elif status == 429 or status >= 500:
                raise FetchFailed(f"fal's queue API answered HTTP {status}")
            elif status in (401, 403):
                raise ResultUnavailable(f"fal refused FAL_KEY (HTTP {status})")
            elif status == 404:
                raise ResultUnavailable("fal has no such result (HTTP 404): it expired, or fal_app is wrong")
            else:
                raise ResultUnavailable(f"fal's queue API answered HTTP {status}")
    except requests.RequestException as e:
        raise FetchFailed(f"could not reach fal's queue API ({type(e).__name__})") from None
    finally:
        session.close()
    if body is None:
        raise ResultUnavailable(f"the result is larger than {body_limit(config)} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ResultUnavailable("the result is not JSON") from None


def request_cdn_token(session: requests.Session, config: Config) -> CdnToken:
    """POST for a CDN token through ``session`` (the caller's, so its connection rules
    apply); raise TransientError, or PermanentError when fal refuses FAL_KEY."""
    try:
        response = session.post(
            f"{config.fal_rest_base_url}/storage/auth/token",
            params={"storage_type": "fal-cdn-v3"},
            headers={"Authorization": f"Key {config.fal_key}"},
            json={},
            allow_redirects=False,
            timeout=(config.connect_timeout, config.read_timeout),
        )
    except requests.exceptions.RequestException as e:
        raise TransientError(f"could not get a fal CDN token: {_brief(e)}") from None
    with response:
        if response.status_code in (401, 403):
            raise PermanentError(
                f"fal refused FAL_KEY when asked for a CDN token (HTTP {response.status_code})"
            )
        try:
            data = response.json() if response.status_code == 200 else None
        except ValueError:
            data = None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise TransientError(f"fal answered {response.status_code} without a CDN token")
    assert isinstance(data, dict)
    return CdnToken(token, _expiry(data.get("expires_at")))


def _expiry(value: object) -> float:
    """A token's expires_at (epoch seconds or ISO 8601) as epoch; an hour if unreadable."""
    at = None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            at = float(value)
        elif isinstance(value, str):
            at = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        pass  # not a time this platform can hold
    return at if at is not None and math.isfinite(at) else time.time() + 3600


def _brief(error: BaseException) -> str:
    """The last line of a nested requests/urllib3 error (no URL, so no query string)."""
    text = str(error).split(":")[-1].strip() or type(error).__name__
    return text[:200]

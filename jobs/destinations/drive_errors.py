"""Drive failures as plain exceptions, and the one bounded retry loop every call uses.

Metadata calls and uploads both go over google-auth's requests session
(drive_resumable.ResumableClient.call), which turns its errors into these classes first,
so retry, pause and give-up are decided in one place (drive_advice.py says what they
mean for a job).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import requests

from core.drive_settings import DriveSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF = 32.0  # seconds; Drive's guide: wait min(2^n + jitter, 32 or 64 s)
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "sharingRateLimitExceeded"}
# Drive does not document the 750 GB/day cap's error; rclone's --drive-stop-on-upload-limit
# keys on this exact message (reference/google-drive.md section 5).
UPLOAD_CAP_MESSAGE = "User rate limit exceeded."


class DriveFailure(Exception):
    """A Drive request that failed; the message is safe to store and show."""

    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        return False


class DriveAuthError(DriveFailure):
    """No token: the key, the impersonation or the scope was refused."""


class DriveSignedOut(DriveFailure):
    """Personal-account mode: no usable sign-in (revoked, expired, never made); Drive
    uploads pause until `falback drive-login`, no file fails."""


class DriveUnreachable(DriveFailure):
    """The request did not get an answer (connection dropped, timeout, token server down)."""

    @property
    def retryable(self) -> bool:
        return True


class DriveIncomplete(DriveFailure):
    """files.list said incompleteSearch: an empty answer does not mean "not found"."""

    @property
    def retryable(self) -> bool:
        return True


class DriveApiError(DriveFailure):
    def __init__(
        self, status: int, reason: str, message: str, doing: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"Drive answered {status} {reason} to {doing}: {message}".rstrip(": "))
        self.status, self.reason, self.detail, self.retry_after = status, reason, message, retry_after
        self.doing = doing

    @classmethod
    def from_body(
        cls, status: int, body: bytes, headers: Mapping[str, str], doing: str, fallback: str = ""
    ) -> DriveApiError:
        """Drive's JSON error (`error.errors[0].reason/message`) from any transport."""
        reason, message = "", fallback
        try:
            error = json.loads(body)["error"]
            first = (error.get("errors") or [{}])[0]
            reason = str(first.get("reason") or error.get("status") or "")
            message = str(first.get("message") or error.get("message") or "")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            pass
        value = str(headers.get("retry-after") or headers.get("Retry-After") or "")
        retry_after = float(value) if value.isdigit() else None
        return cls(status, reason, message[:300], doing, retry_after)

    @classmethod
    def from_response(cls, response: requests.Response, doing: str) -> DriveApiError:
        return cls.from_body(
            response.status_code, response.content, response.headers, doing, response.reason or ""
        )

    @property
    def upload_cap(self) -> bool:
        return self.status == 403 and (
            self.reason == "uploadLimitExceeded"
            or (self.reason in RATE_REASONS and self.detail.strip() == UPLOAD_CAP_MESSAGE)
        )

    @property
    def retryable(self) -> bool:
        if self.status >= 500 or self.status == 429:
            return True
        return self.status == 403 and self.reason in RATE_REASONS and not self.upload_cap


class FolderGone(DriveFailure):
    """A create answered 404: the folder it names was deleted (drive.py forgets it)."""


class ReservedIdTaken(DriveFailure):
    """The row's reserved file id exists but is trashed or hidden: it cannot become the copy."""


class SessionRestart(DriveFailure):
    """The upload session was dropped (expired, or a 4xx Drive's guide says to start over
    on); `cause` is Drive's answer, if there was one."""

    def __init__(self, message: str, cause: DriveApiError | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def backoff(settings: DriveSettings, attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry `attempt` (0-based), or None when it is time to give up:
    retries spent, or Retry-After asks for longer than a job should sleep."""
    if attempt >= settings.max_retries or (retry_after or 0) > MAX_BACKOFF:
        return None
    base = settings.retry_base_seconds
    delay = min(base * 2.0**attempt, MAX_BACKOFF) + random.uniform(0, min(base, 1.0))
    return max(delay, retry_after or 0.0)


def with_retries(settings: DriveSettings, label: str, once: Callable[[], T]) -> T:
    """`once()`, repeated with exponential backoff and jitter while it raises a retryable
    DriveFailure (5xx, 429, rate-limit 403s, dropped connections, incomplete searches),
    at most `max_retries` times and honouring Retry-After."""
    attempt = 0
    while True:
        try:
            return once()
        except DriveFailure as error:
            delay = backoff(settings, attempt, error.retry_after) if error.retryable else None
            if delay is None:
                raise
            log.warning(
                "%s: %s; retry %d of %d in %.1fs", label, error, attempt + 1, settings.max_retries, delay
            )
            time.sleep(delay)
            attempt += 1


def brief(error: BaseException) -> str:
    """The operating system's words for a failed request ("Connection reset by peer"),
    never the text of requests/urllib3 errors: that carries the URL, and a session URL
    is a capability."""
    queue: list[BaseException] = [error]
    seen: set[int] = set()
    while queue:
        cause = queue.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, OSError) and not isinstance(cause, requests.RequestException):
            return (cause.strerror or str(cause) or type(cause).__name__)[:200]
        queue += [a for a in cause.args if isinstance(a, BaseException)]
        queue += [c for c in (cause.__cause__, cause.__context__) if c is not None]
    timed_out = isinstance(error, requests.Timeout | TimeoutError)
    return "timed out" if timed_out else type(error).__name__


def unreachable(doing: str, error: BaseException) -> DriveUnreachable:
    return DriveUnreachable(f"could not reach Drive to {doing}: {brief(error)}")

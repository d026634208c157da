"""A small Drive v3 client: the documented REST protocol over google-auth's
AuthorizedSession (requests), with bounded backoff and classified errors.

Why not google-api-python-client: its resumable uploads need a seekable stream, resend
an exhausted stream on retry, send an invalid last Content-Range when an unknown-size
upload ends on a chunk boundary, and run on httplib2, which resends bodies by itself
(reference/google-drive.md, section 2). Here every body is `bytes` of at most one chunk,
so any resend (ours, or google-auth's after a 401) sends the same bytes again.

Every URL is built from `settings.api_base_url` (https://www.googleapis.com unless a
test points it at the emulator); the session URI comes from Drive's Location header.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from google.auth.exceptions import GoogleAuthError

from core.drive_settings import DriveSettings
from jobs.destinations import drive_auth
from jobs.errors import CopyError, DestinationPaused, PermanentError, TransientError

log = logging.getLogger(__name__)

FOLDER_MIME = "application/vnd.google-apps.folder"
FILE_FIELDS = "id,name,mimeType,parents,driveId,size,md5Checksum,appProperties,webViewLink,trashed"
MAX_BACKOFF = 32.0  # seconds; Drive's guide: wait min(2^n + jitter, 32 or 64 s)
_RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "sharingRateLimitExceeded"}
# Drive does not document the 750 GB/day cap's error; rclone's --drive-stop-on-upload-limit
# keys on this exact message (reference/google-drive.md section 5).
_UPLOAD_CAP_MESSAGE = "User rate limit exceeded."
_ALL_DRIVES = {"supportsAllDrives": "true"}


class DriveFailure(Exception):
    """A Drive request that failed; the message is safe to store and show."""

    retry_after: float | None = None


class DriveAuthError(DriveFailure):
    """No token: the key, the impersonation or the scope was refused."""


class DriveUnreachable(DriveFailure):
    """The request did not get an answer (connection dropped, timeout)."""


class DriveApiError(DriveFailure):
    def __init__(self, status: int, reason: str, message: str, doing: str,
                 retry_after: float | None = None) -> None:
        super().__init__(f"Drive answered {status} {reason} to {doing}: {message}".rstrip(": "))
        self.status, self.reason, self.detail, self.retry_after = status, reason, message, retry_after

    @classmethod
    def from_response(cls, response: requests.Response, doing: str) -> DriveApiError:
        reason, message = "", ""
        try:
            error = response.json()["error"]
            first = (error.get("errors") or [{}])[0]
            reason = str(first.get("reason") or error.get("status") or "")
            message = str(first.get("message") or error.get("message") or "")
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            message = response.reason or ""
        value = response.headers.get("Retry-After", "")
        retry_after = float(value) if value.isdigit() else None
        return cls(response.status_code, reason, message[:300], doing, retry_after)

    @property
    def upload_cap(self) -> bool:
        return self.status == 403 and (
            self.reason == "uploadLimitExceeded"
            or (self.reason in _RATE_REASONS and self.detail.strip() == _UPLOAD_CAP_MESSAGE)
        )

    @property
    def retryable(self) -> bool:
        if self.status >= 500 or self.status == 429:
            return True
        return self.status == 403 and self.reason in _RATE_REASONS and not self.upload_cap


@dataclass(frozen=True)
class ChunkAnswer:
    """A session PUT's answer: bytes Drive holds, and the file once it is complete."""

    confirmed: int
    file: dict[str, Any] | None = None


class DriveApi:
    def __init__(self, settings: DriveSettings, http: requests.Session | None = None) -> None:
        self.settings = settings
        self.http = http or drive_auth.session(settings)
        self.files_url = f"{settings.api_base_url}/drive/v3/files"
        self.upload_url = f"{settings.api_base_url}/upload/drive/v3/files"
        self.label = ""  # e.g. "ledger 12": prefixes log lines

    def close(self) -> None:
        self.http.close()

    # -- the one place requests go out

    def call(self, method: str, url: str, doing: str, *, expect: Collection[int] = (200,),
             retry: bool = True, **kwargs: Any) -> requests.Response:
        """One request, retried with exponential backoff and jitter on 5xx, 429, rate-limit
        403s and dropped connections (at most `max_retries` times, honouring Retry-After);
        raise a DriveFailure for anything else or once the retries are spent."""
        attempt = 0
        while True:
            error: DriveFailure
            try:
                response = self.http.request(
                    method, url, allow_redirects=False,
                    timeout=(min(10.0, self.settings.timeout), self.settings.timeout), **kwargs,
                )
            except GoogleAuthError as e:
                message = drive_auth.explain(e, self.settings)
                if not drive_auth.is_retryable(e):
                    raise DriveAuthError(message) from None
                error = DriveUnreachable(message)
            except requests.RequestException as e:
                error = DriveUnreachable(f"could not reach Drive to {doing}: {_brief(e)}")
            else:
                if response.status_code in expect:
                    return response
                error = DriveApiError.from_response(response, doing)
                response.close()
                if not error.retryable:
                    raise error
            delay = self.backoff(attempt, error.retry_after) if retry else None
            if delay is None:
                raise error
            log.warning("%s: %s; retry %d of %d in %.1fs", self.label, error, attempt + 1,
                        self.settings.max_retries, delay)
            time.sleep(delay)
            attempt += 1

    def backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry `attempt` (0-based), or None when it is time to give
        up: retries spent, or Retry-After asks for longer than a job should sleep."""
        if attempt >= self.settings.max_retries or (retry_after or 0) > MAX_BACKOFF:
            return None
        base = self.settings.retry_base_seconds
        delay = min(base * 2.0**attempt, MAX_BACKOFF) + random.uniform(0, min(base, 1.0))
        return max(delay, retry_after or 0.0)

    # -- metadata

    def get_file(self, file_id: str, fields: str = FILE_FIELDS) -> dict[str, Any] | None:
        """The file's metadata, or None if Drive has no (visible, untrashed) file by that id."""
        try:
            response = self.call("GET", f"{self.files_url}/{file_id}", "look up a file",
                                 params={**_ALL_DRIVES, "fields": fields})
        except DriveApiError as e:
            if e.status == 404:
                return None
            raise
        found: dict[str, Any] = response.json()
        return None if found.get("trashed") else found

    def list_files(self, q: str, fields: str = FILE_FIELDS, page_size: int = 10) -> list[dict[str, Any]]:
        response = self.call("GET", self.files_url, "search files", params={
            **_ALL_DRIVES, "includeItemsFromAllDrives": "true", "corpora": "allDrives",
            "q": q, "pageSize": str(page_size), "fields": f"files({fields})",
        })
        return list(response.json().get("files", []))

    def generate_id(self) -> str:
        response = self.call("GET", f"{self.files_url}/generateIds", "reserve a file id",
                             params={"count": "1", "space": "drive", "type": "files"})
        return str(response.json()["ids"][0])

    def create_folder(self, name: str, parent: str, app_properties: Mapping[str, str]) -> dict[str, Any]:
        body = {"name": name, "mimeType": FOLDER_MIME, "parents": [parent],
                "appProperties": dict(app_properties)}
        response = self.call("POST", self.files_url, f"create the folder {name!r}",
                             params={**_ALL_DRIVES, "fields": "id,name"}, **_json(body))
        return dict(response.json())

    def delete_file(self, file_id: str) -> None:
        try:
            self.call("DELETE", f"{self.files_url}/{file_id}", "delete a file",
                      expect=(200, 204), params=_ALL_DRIVES)
        except DriveApiError as e:
            if e.status != 404:
                raise

    def share_with_anyone(self, file_id: str) -> None:
        body = {"type": "anyone", "role": "reader", "allowFileDiscovery": False}
        self.call("POST", f"{self.files_url}/{file_id}/permissions", "share the file by link",
                  params={**_ALL_DRIVES, "fields": "id"}, **_json(body))

    # -- uploads

    def multipart(self, metadata: Mapping[str, Any], data: bytes, mime_type: str) -> dict[str, Any]:
        """One request with metadata and content (small files: at most one chunk)."""
        boundary = "falback-" + secrets.token_hex(12)
        body = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            json.dumps(metadata).encode(),
            f"\r\n--{boundary}\r\nContent-Type: {mime_type}\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--".encode(),
        ])
        response = self.call(
            "POST", self.upload_url, "upload a file", expect=(200, 201),
            params={**_ALL_DRIVES, "uploadType": "multipart", "fields": FILE_FIELDS}, data=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
        )
        return dict(response.json())

    def start_session(self, metadata: Mapping[str, Any], size: int | None, mime_type: str) -> str:
        """Open a resumable upload session; return its URI (a capability: never logged)."""
        headers = {"X-Upload-Content-Type": mime_type}
        if size is not None:
            headers["X-Upload-Content-Length"] = str(size)
        response = self.call(
            "POST", self.upload_url, "start an upload",
            params={**_ALL_DRIVES, "uploadType": "resumable", "fields": FILE_FIELDS},
            **_json(metadata, headers),
        )
        location = response.headers.get("Location", "")
        if not location.startswith(self.upload_url):
            raise DriveApiError(response.status_code, "noSession", "no usable Location header",
                                "start an upload")
        return location

    def owns_session(self, uri: str) -> bool:
        """A saved session URI this client may use (not one made against other servers)."""
        return uri.startswith(self.upload_url + "?")

    def put(self, uri: str, data: bytes | memoryview, content_range: str, doing: str) -> ChunkAnswer:
        """One PUT on the session, not retried here (the caller asks Drive where it stands
        first). 308 means "send more from `confirmed`"; 200/201 carry the file."""
        # requests sends an empty non-bytes body chunked; Drive wants Content-Length: 0.
        body = data if len(data) else b""
        response = self.call("PUT", uri, doing, expect=(200, 201, 308), retry=False,
                             data=body, headers={"Content-Range": content_range})
        if response.status_code == 308:
            return ChunkAnswer(_confirmed(response.headers.get("Range")))
        file: dict[str, Any] = response.json()
        return ChunkAnswer(int(file.get("size") or 0), file)

    def query(self, uri: str, total: int | None) -> ChunkAnswer:
        """Ask how much of the session Drive holds (an empty PUT with bytes */N)."""
        answer: ChunkAnswer | None = None
        attempt = 0
        while answer is None:
            try:
                answer = self.put(uri, b"", f"bytes */{'*' if total is None else total}",
                                  "ask where the upload stands")
            except (DriveUnreachable, DriveApiError) as e:
                retryable = isinstance(e, DriveUnreachable) or e.retryable
                delay = self.backoff(attempt, e.retry_after) if retryable else None
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1
        return answer


def upload_cap_pause(error: DriveApiError, settings: DriveSettings) -> DestinationPaused:
    until = datetime.now(UTC) + timedelta(seconds=settings.upload_cap_pause)
    return DestinationPaused(
        f"Drive's daily upload cap (750 GB per day) was reached ({error.status} {error.reason}:"
        f" {error.detail}); Drive uploads pause until {until:%Y-%m-%d %H:%M} UTC", until,
    )


def copy_error(error: DriveFailure, settings: DriveSettings) -> CopyError:
    """The job's view of a Drive failure: retry later, pause, or give up with a reason."""
    if isinstance(error, DriveAuthError):
        return PermanentError(f"{error} (run `falback drive-check`)")
    if isinstance(error, DriveUnreachable):
        return TransientError(str(error))
    assert isinstance(error, DriveApiError)
    if error.upload_cap:
        return upload_cap_pause(error, settings)
    if error.reason == "storageQuotaExceeded":
        return PermanentError(_quota_advice(error, settings))
    if error.reason == "insufficientPermissions":
        return PermanentError(f"{error}. The token's scope ({settings.scope}) cannot write files;"
                              " set GOOGLE_DRIVE_SCOPE=drive")
    if error.status == 403 and not error.retryable:
        return PermanentError(f"{error}. {settings.client_email} cannot write to the folder: make it"
                              " a Content manager of the shared drive (run `falback drive-check`)")
    return TransientError(str(error), retry_after=error.retry_after)


@contextmanager
def classified(settings: DriveSettings) -> Iterator[None]:
    """Turn a Drive failure into the job's error classes (retry, pause or give up)."""
    try:
        yield
    except DriveFailure as e:
        raise copy_error(e, settings) from e


def _quota_advice(error: DriveApiError, settings: DriveSettings) -> str:
    if settings.impersonate:
        return (f"{error}. The storage of {settings.impersonate} is full: free space or buy more,"
                " or back up into a shared drive")
    return (f"Drive refused the upload: a service account has no storage quota ({error.detail[:80]})."
            " Put GOOGLE_DRIVE_FOLDER_ID in a shared drive and add"
            f" {settings.client_email} as a Content manager, or set GOOGLE_DRIVE_IMPERSONATE to a"
            " Workspace user (domain-wide delegation); see docs/google-drive.md")


def _json(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"data": json.dumps(body).encode(),
            "headers": {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}}


def _confirmed(range_header: str | None) -> int:
    """`Range: bytes=0-N` -> N + 1; no header means Drive holds nothing yet."""
    if not range_header:
        return 0
    try:
        return int(range_header.rsplit("-", 1)[1]) + 1
    except (IndexError, ValueError):
        raise DriveApiError(308, "badRange", f"unreadable Range header {range_header[:60]!r}",
                            "read the upload's progress") from None


def _brief(error: BaseException) -> str:
    """The operating system's words for a failed request ("Connection reset by peer"),
    never the text of requests/urllib3 errors: that carries the URL, and a session URL
    is a capability."""
    queue, seen = [error], set()
    while queue:
        cause = queue.pop(0)
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, OSError) and not isinstance(cause, requests.RequestException):
            return (cause.strerror or str(cause) or type(cause).__name__)[:200]
        queue += [a for a in cause.args if isinstance(a, BaseException)]
        queue += [c for c in (cause.__cause__, cause.__context__) if c is not None]
    return "timed out" if isinstance(error, requests.Timeout) else type(error).__name__

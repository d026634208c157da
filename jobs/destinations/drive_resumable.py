"""Drive's upload protocol (resumable sessions, multipart creates) spoken directly over
google-auth's requests session, as rclone does.

Why not google-api-python-client here: its resumable uploads need a seekable stream,
resend an exhausted stream on retry, send an invalid last Content-Range when an
unknown-size upload ends on a chunk boundary, and run on httplib2, which resends bodies
by itself (reference/google-drive.md, sections 0 and 2). Here every body is `bytes` of
at most one chunk, so any resend (ours, or google-auth's after a 401) sends the same
bytes again. The session URI comes from Drive's Location header and is a capability:
it is never logged.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from google.auth.exceptions import GoogleAuthError

from core.drive_settings import DriveSettings
from jobs.destinations import drive_auth
from jobs.destinations.drive_errors import DriveApiError, unreachable, with_retries

FILE_FIELDS = "id,name,mimeType,parents,driveId,size,md5Checksum,appProperties,webViewLink,trashed"
_ALL_DRIVES = {"supportsAllDrives": "true"}


@dataclass(frozen=True)
class ChunkAnswer:
    """A session PUT's answer: bytes Drive holds, and the file once it is complete."""

    confirmed: int
    file: dict[str, Any] | None = None


class ResumableClient:
    def __init__(self, settings: DriveSettings, creds: Any) -> None:
        self.settings = settings
        self.http: requests.Session = drive_auth.session(settings, creds)
        self.upload_url = f"{settings.api_base_url}/upload/drive/v3/files"
        self.label = ""  # e.g. "ledger 12 job backup-12": prefixes log lines

    def close(self) -> None:
        self.http.close()

    def call(
        self,
        method: str,
        url: str,
        doing: str,
        *,
        expect: Collection[int] = (200,),
        retry: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One request (with bounded backoff unless `retry` is off); a DriveFailure for
        anything but an `expect`ed status."""

        def once() -> requests.Response:
            try:
                response = self.http.request(
                    method,
                    url,
                    allow_redirects=False,
                    timeout=(min(10.0, self.settings.timeout), self.settings.timeout),
                    **kwargs,
                )
            except GoogleAuthError as e:
                raise drive_auth.failure(e, self.settings) from None
            except requests.RequestException as e:
                raise unreachable(doing, e) from None
            if response.status_code not in expect:
                error = DriveApiError.from_response(response, doing)
                response.close()
                raise error
            return response

        return with_retries(self.settings, self.label, once) if retry else once()

    def multipart(
        self, metadata: Mapping[str, Any], data: bytes | memoryview, mime_type: str
    ) -> dict[str, Any]:
        """One request with metadata and content (small files: at most one chunk)."""
        boundary = "falback-" + secrets.token_hex(12)
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps(metadata).encode(),
                f"\r\n--{boundary}\r\nContent-Type: {mime_type}\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--".encode(),
            ]
        )
        response = self.call(
            "POST",
            self.upload_url,
            "upload a file",
            expect=(200, 201),
            params={**_ALL_DRIVES, "uploadType": "multipart", "fields": FILE_FIELDS},
            data=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
        )
        return dict(response.json())

    def start_session(self, metadata: Mapping[str, Any], size: int | None, mime_type: str) -> str:
        """Open a resumable upload session; return its URI."""
        headers = {"Content-Type": "application/json; charset=UTF-8", "X-Upload-Content-Type": mime_type}
        if size is not None:
            headers["X-Upload-Content-Length"] = str(size)
        response = self.call(
            "POST",
            self.upload_url,
            "start an upload",
            params={**_ALL_DRIVES, "uploadType": "resumable", "fields": FILE_FIELDS},
            data=json.dumps(metadata).encode(),
            headers=headers,
        )
        location = response.headers.get("Location", "")
        if not self.owns_session(location):
            raise DriveApiError(
                response.status_code, "noSession", "no usable Location header", "start an upload"
            )
        return location

    def owns_session(self, uri: str) -> bool:
        """A session URI this client may use (not one made against other servers)."""
        return uri.startswith(self.upload_url + "?")

    def put(self, uri: str, data: bytes | memoryview, content_range: str, doing: str) -> ChunkAnswer:
        """One PUT on the session, not retried here (the caller asks Drive where it stands
        first). 308 means "send more from `confirmed`"; 200/201 carry the file."""
        # requests sends an empty non-bytes body chunked; Drive wants Content-Length: 0.
        body = data if len(data) else b""
        response = self.call(
            "PUT",
            uri,
            doing,
            expect=(200, 201, 308),
            retry=False,
            data=body,
            headers={"Content-Range": content_range},
        )
        if response.status_code == 308:
            return ChunkAnswer(_confirmed(response.headers.get("Range")))
        file: dict[str, Any] = response.json()
        return ChunkAnswer(int(file.get("size") or 0), file)

    def query(self, uri: str, total: int | None) -> ChunkAnswer:
        """Ask how much of the session Drive holds (an empty PUT with bytes */N)."""
        of = "*" if total is None else total
        return with_retries(
            self.settings,
            self.label,
            lambda: self.put(uri, b"", f"bytes */{of}", "ask where the upload stands"),
        )


def _confirmed(range_header: str | None) -> int:
    """`Range: bytes=0-N` -> N + 1; no header means Drive holds nothing yet."""
    if not range_header:
        return 0
    try:
        return int(range_header.rsplit("-", 1)[1]) + 1
    except (IndexError, ValueError):
        raise DriveApiError(
            308, "badRange", f"unreadable Range header {range_header[:60]!r}", "read the upload's progress"
        ) from None

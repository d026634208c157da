"""Drive v3 metadata calls through google-api-python-client, and the upload protocol
(drive_resumable.py) beside it on the same credentials.

The client is built from the discovery document bundled with the library
(static_discovery: no network at start-up) and pointed at `settings.api_base_url`
(Google, or the emulator in tests). Each call runs once per try (`execute(num_retries=0)`);
retries, Retry-After and the upload-cap check are ours (drive_errors.with_retries), the
same as for uploads. Every call names supportsAllDrives so shared-drive items are seen.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Mapping
from typing import Any

import httplib2
from google.auth.exceptions import GoogleAuthError
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from core.drive_settings import DriveSettings
from jobs.destinations import drive_auth
from jobs.destinations.drive_errors import (
    DriveApiError,
    DriveIncomplete,
    unreachable,
    with_retries,
)
from jobs.destinations.drive_resumable import FILE_FIELDS, ResumableClient

FOLDER_MIME = "application/vnd.google-apps.folder"
_TRANSPORT_ERRORS = (httplib2.HttpLib2Error, http.client.HTTPException, OSError)


class DriveApi:
    def __init__(self, settings: DriveSettings, database_url: str | None = None) -> None:
        self.settings = settings
        self.credentials: Any = drive_auth.credentials(settings, database_url)
        self._http = drive_auth.authorized_http(settings, self.credentials)
        self.service: Any = build(
            "drive",
            "v3",
            http=self._http,
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": f"{settings.api_base_url}/drive/v3/"},
        )
        self.uploads = ResumableClient(settings, self.credentials)
        self._label = ""

    @property
    def label(self) -> str:
        """Prefixes log lines, e.g. "ledger 12 job backup-12"."""
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        self._label = self.uploads.label = value

    def close(self) -> None:
        self.uploads.close()
        self.service.close()

    def execute(
        self, doing: str, request: Callable[[], Any], check: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """`request()` builds one googleapiclient HttpRequest; run it with our retries.
        `check` may reject an answer with a retryable DriveFailure, to be asked again."""

        def once() -> dict[str, Any]:
            try:
                result = request().execute(num_retries=0)
            except HttpError as e:
                raise DriveApiError.from_body(
                    e.resp.status, e.content, e.resp, doing, e.resp.reason or ""
                ) from None
            except GoogleAuthError as e:
                raise drive_auth.failure(e, self.settings) from None
            except _TRANSPORT_ERRORS as e:
                raise unreachable(doing, e) from None
            answer = dict(result) if isinstance(result, dict) else {}
            if check is not None:
                check(answer)
            return answer

        return with_retries(self.settings, self.label, once)

    # -- files

    def get_file(
        self, file_id: str, fields: str = FILE_FIELDS, *, trashed_too: bool = False
    ) -> dict[str, Any] | None:
        """The file's metadata, or None if Drive has no visible file by that id (nor, unless
        `trashed_too`, an untrashed one)."""
        wanted = fields if trashed_too or "trashed" in fields.split(",") else f"{fields},trashed"
        try:
            found = self.execute(
                "look up a file",
                lambda: self.service.files().get(fileId=file_id, fields=wanted, supportsAllDrives=True),
            )
        except DriveApiError as e:
            if e.status == 404:
                return None
            raise
        return None if found.get("trashed") and not trashed_too else found

    def list_files(
        self, q: str, fields: str = FILE_FIELDS, *, drive_id: str | None, page_size: int = 10
    ) -> list[dict[str, Any]]:
        """Files matching `q` in the one corpus that holds the backups: the shared drive
        `drive_id`, else the user's own (Drive: prefer `drive` or `user` to `allDrives`).
        An incomplete search that found nothing is retried, never taken for "none"."""
        where: dict[str, Any] = (
            {"corpora": "drive", "driveId": drive_id, "includeItemsFromAllDrives": True}
            if drive_id
            else {"corpora": "user"}
        )

        def complete(answer: dict[str, Any]) -> None:
            if answer.get("incompleteSearch") and not answer.get("files"):
                raise DriveIncomplete(
                    "Drive's search came back incomplete (incompleteSearch)"
                    " with nothing found, so a copy may exist unseen"
                )

        answer = self.execute(
            "search files",
            lambda: self.service.files().list(
                q=q,
                pageSize=page_size,
                fields=f"incompleteSearch,files({fields})",
                supportsAllDrives=True,
                **where,
            ),
            complete,
        )
        return list(answer.get("files", []))

    def generate_id(self) -> str:
        answer = self.execute(
            "reserve a file id",
            lambda: self.service.files().generateIds(count=1, space="drive", type="files"),
        )
        return str(answer["ids"][0])

    def create_folder(self, name: str, parent: str, app_properties: Mapping[str, str]) -> dict[str, Any]:
        """A folder under `parent`, made under a reserved id so that a create retried after
        a lost answer finds the first one (409) instead of making a second."""
        folder_id = self.generate_id()
        body = {
            "id": folder_id,
            "name": name,
            "mimeType": FOLDER_MIME,
            "parents": [parent],
            "appProperties": dict(app_properties),
        }
        try:
            return self.execute(
                f"create the folder {name!r}",
                lambda: self.service.files().create(body=body, fields="id,name", supportsAllDrives=True),
            )
        except DriveApiError as e:
            made = self.get_file(folder_id, "id,name") if e.status == 409 else None
            if made is None:
                raise
            return made

    def trash_file(self, file_id: str) -> None:
        """Move a file to Drive's trash (files.update trashed=true): in a shared drive a
        Content manager (fileOrganizer) may do this, while a permanent delete needs a
        Manager (organizer). A file already gone is fine."""
        try:
            self.execute(
                "move a file to the trash",
                lambda: self.service.files().update(
                    fileId=file_id, body={"trashed": True}, fields="id,trashed", supportsAllDrives=True
                ),
            )
        except DriveApiError as e:
            if e.status != 404:
                raise

    def share_with_anyone(self, file_id: str) -> None:
        body = {"type": "anyone", "role": "reader", "allowFileDiscovery": False}
        self.execute(
            "share the file by link",
            lambda: self.service.permissions().create(
                fileId=file_id, body=body, fields="id", supportsAllDrives=True
            ),
        )

    def about(self, fields: str = "user(emailAddress)") -> dict[str, Any]:
        return self.execute("ask who the token acts for", lambda: self.service.about().get(fields=fields))

"""Drive v3 metadata calls, and the upload protocol (drive_resumable.py) beside them, over
one google-auth requests session (tokens added, and refreshed on a 401).

The metadata calls are Drive's plain REST requests (GET/POST/PATCH on
`settings.api_base_url`/drive/v3/..., JSON in and out), not google-api-python-client:
that client builds its methods from a discovery document in every process that makes
one (about 1.5 MiB each), and with httplib2 it added about 6 MiB of imports to every
worker, for seven requests. Each call runs once per try; retries, Retry-After and the
upload-cap check are ours (drive_errors.with_retries), the same as for uploads. Every
call names supportsAllDrives so shared-drive items are seen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import requests

from core.drive_settings import DriveSettings
from jobs.destinations import drive_auth
from jobs.destinations.drive_errors import DriveApiError, DriveIncomplete, with_retries
from jobs.destinations.drive_resumable import FILE_FIELDS, ResumableClient

FOLDER_MIME = "application/vnd.google-apps.folder"
_ALL_DRIVES = {"supportsAllDrives": "true"}


class DriveApi:
    def __init__(self, settings: DriveSettings, database_url: str | None = None) -> None:
        self.settings = settings
        self.credentials: Any = drive_auth.credentials(settings, database_url)
        self.uploads = ResumableClient(settings, self.credentials)
        self.base_url = f"{settings.api_base_url}/drive/v3"
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

    def execute(
        self,
        method: str,
        path: str,
        doing: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
        all_drives: bool = True,
    ) -> dict[str, Any]:
        """One metadata request (`path` under /drive/v3) with our retries; its JSON answer.
        `check` may reject an answer with a retryable DriveFailure, to be asked again.
        `all_drives` off for the methods that take no supportsAllDrives (generateIds,
        about), as the discovery client never sent it there."""
        url = self.base_url + path
        query = {**(_ALL_DRIVES if all_drives else {}), **{k: str(v) for k, v in (params or {}).items()}}

        def once() -> dict[str, Any]:
            response = self.uploads.call(method, url, doing, retry=False, params=query, json=body)
            answer = _json(response, doing)
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
            found = self.execute("GET", _file(file_id), "look up a file", params={"fields": wanted})
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
        where: dict[str, str] = (
            {"corpora": "drive", "driveId": drive_id, "includeItemsFromAllDrives": "true"}
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
            "GET",
            "/files",
            "search files",
            params={"q": q, "pageSize": page_size, "fields": f"incompleteSearch,files({fields})", **where},
            check=complete,
        )
        return list(answer.get("files", []))

    def generate_id(self) -> str:
        answer = self.execute(
            "GET",
            "/files/generateIds",
            "reserve a file id",
            params={"count": 1, "space": "drive", "type": "files"},
            all_drives=False,
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
                "POST", "/files", f"create the folder {name!r}", params={"fields": "id,name"}, body=body
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
                "PATCH",
                _file(file_id),
                "move a file to the trash",
                params={"fields": "id,trashed"},
                body={"trashed": True},
            )
        except DriveApiError as e:
            if e.status != 404:
                raise

    def share_with_anyone(self, file_id: str) -> None:
        body = {"type": "anyone", "role": "reader", "allowFileDiscovery": False}
        self.execute(
            "POST",
            _file(file_id) + "/permissions",
            "share the file by link",
            params={"fields": "id"},
            body=body,
        )

    def about(self, fields: str = "user(emailAddress)") -> dict[str, Any]:
        return self.execute(
            "GET", "/about", "ask who the token acts for", params={"fields": fields}, all_drives=False
        )


def _file(file_id: str) -> str:
    return "/files/" + quote(file_id, safe="")


def _json(response: requests.Response, doing: str) -> dict[str, Any]:
    """A metadata answer's JSON object; an unreadable one is Drive's error, not ours."""
    try:
        answer = response.json()
    except ValueError:
        raise DriveApiError(response.status_code, "badJson", "the answer was not JSON", doing) from None
    return dict(answer) if isinstance(answer, dict) else {}

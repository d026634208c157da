"""`falback drive-check`: can this configuration back up to Drive? Says what is wrong.

It gets a token (the key, the impersonation and the scope are checked there), looks up
GOOGLE_DRIVE_FOLDER_ID, then creates a tiny probe file in it and deletes it again, the
same requests a backup makes. Each failure is told in plain words with the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import Request

from core.config import Config
from core.drive_settings import DriveSettings
from jobs.destinations import drive_auth
from jobs.destinations.drive_api import FOLDER_MIME, DriveApi, DriveApiError, DriveFailure

Say = Callable[[str], None]


class CheckFailed(Exception):
    """One check failed; the message is the advice."""


def drive_check(config: Config, say: Say = print) -> int:
    settings = config.drive
    if settings is None:
        say("Google Drive is not configured (no GOOGLE_DRIVE_* variables): backups go to the"
            f" local folder {config.backup_dir}. See docs/google-drive.md.")
        return 1
    say(f"service account  {settings.client_email} (key {settings.private_key_id or '?'},"
        f" from {settings.key_source})")
    say(f"acting as        {settings.impersonate or 'the service account itself (no impersonation)'}")
    say(f"scope            {settings.scope}")
    api = DriveApi(settings)
    try:
        _token(api, settings)
        say("token            ok")
        folder = _folder(api, settings)
        say(f"folder           {folder}")
        say(f"write probe      {_probe(api, settings)}")
    except CheckFailed as e:
        say(f"PROBLEM          {e}")
        say("drive-check: Drive is not usable yet")
        return 1
    finally:
        api.close()
    say("drive-check: ok, backups can go to Drive")
    return 0


def _token(api: DriveApi, settings: DriveSettings) -> None:
    try:
        credentials: Any = getattr(api.http, "credentials")  # noqa: B009 - untyped google-auth
        credentials.refresh(Request())
    except GoogleAuthError as e:
        raise CheckFailed(drive_auth.explain(e, settings)) from None


def _folder(api: DriveApi, settings: DriveSettings) -> str:
    """Where backups go, described; fails when it is missing or cannot hold files."""
    who = settings.impersonate or settings.client_email
    if settings.folder_id is None:
        if settings.impersonate is None:
            raise CheckFailed(_no_quota("GOOGLE_DRIVE_FOLDER_ID is not set, so files would go to the"
                                        " service account's own My Drive", settings))
        return f"the My Drive of {settings.impersonate} (GOOGLE_DRIVE_FOLDER_ID is not set)"
    try:
        found = api.get_file(settings.folder_id, "id,name,mimeType,driveId")
    except DriveFailure as e:
        raise CheckFailed(_describe(e, settings)) from None
    if found is None:
        scope_hint = (" With the drive.file scope only files falback created are visible: set"
                      " GOOGLE_DRIVE_SCOPE=drive." if settings.scope.endswith("drive.file") else "")
        raise CheckFailed(
            f"the folder {settings.folder_id} (GOOGLE_DRIVE_FOLDER_ID) was not found, or {who} cannot"
            f" see it. Add {settings.client_email} to the shared drive as a Content manager"
            f" (or share the folder with {who}).{scope_hint}"
        )
    if found.get("mimeType") != FOLDER_MIME:
        raise CheckFailed(f"GOOGLE_DRIVE_FOLDER_ID {settings.folder_id} is a file"
                          f" ({found.get('name')!r}), not a folder")
    name = found.get("name")
    if found.get("driveId"):
        return f"{name!r} ({settings.folder_id}) in a shared drive ({found['driveId']})"
    if settings.impersonate is None:
        raise CheckFailed(_no_quota(f"the folder {name!r} is in someone's My Drive, not in a shared"
                                    " drive", settings))
    return f"{name!r} ({settings.folder_id}) in a My Drive, as {settings.impersonate}"


def _probe(api: DriveApi, settings: DriveSettings) -> str:
    """Create a tiny file where backups go, then delete it, as a backup would."""
    parent = settings.folder_id or "root"
    name = f"falback-drive-check-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    metadata = {"name": name, "parents": [parent], "appProperties": {"falback_probe": "1"}}
    try:
        created = api.multipart(metadata, b"falback drive-check probe\n", "text/plain")
    except DriveFailure as e:
        raise CheckFailed(_describe(e, settings)) from None
    notes = []
    if settings.share_anyone:
        try:
            api.share_with_anyone(str(created["id"]))
        except DriveFailure as e:
            notes.append(f"but sharing by link (GOOGLE_DRIVE_SHARE_ANYONE) was refused: {e}."
                         " An admin policy may forbid links for anyone; backups still work")
    try:
        api.delete_file(str(created["id"]))
    except DriveFailure as e:
        raise CheckFailed(
            f"created the probe file {name!r} but could not delete it ({e}). falback deletes"
            " copies that fail verification: make the service account a Content manager, and"
            " delete the probe by hand"
        ) from None
    return " ".join(["created and deleted a test file: ok", *notes])


def _describe(error: DriveFailure, settings: DriveSettings) -> str:
    if not isinstance(error, DriveApiError):
        return str(error)
    if error.reason == "storageQuotaExceeded":
        return _no_quota(f"Drive refused the file ({error.detail[:60]}...)", settings)
    if error.reason == "insufficientPermissions":
        return (f"the token's scope {settings.scope} does not allow creating files ({error}): set"
                " GOOGLE_DRIVE_SCOPE=drive (and, with impersonation, authorise that scope for the"
                " client ID in the Admin console)")
    if error.status == 404:
        return (f"the folder {settings.folder_id} was not found, or {settings.client_email} cannot"
                f" see it ({error})")
    if error.status == 403 and not error.retryable:
        return (f"{settings.impersonate or settings.client_email} may not add files there ({error}):"
                " make the service account a Content manager of the shared drive")
    return str(error)


def _no_quota(what: str, settings: DriveSettings) -> str:
    return (
        f"{what}. A service account has no storage quota, so Drive refuses its files there."
        f" Use a folder in a shared drive and add {settings.client_email} to it as a Content"
        " manager, or set GOOGLE_DRIVE_IMPERSONATE to a Workspace user the service account may"
        " act for (domain-wide delegation; docs/google-drive.md)"
    )

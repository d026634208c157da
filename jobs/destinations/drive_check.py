"""`falback drive-check`: can this configuration back up to Drive? Says what is wrong.

It gets a token (the key, the impersonation and the scope are checked there), asks Drive
who the token acts for (about.get: the Drive API is enabled), looks up
GOOGLE_DRIVE_FOLDER_ID, then creates a tiny probe file in it and moves it to the trash
again, the same requests a backup makes (falback trashes copies that fail verification;
that is all a Content manager may do in a shared drive). Each failure is told in plain
words with the fix, worded for the mode in use.
"""

from __future__ import annotations

from collections.abc import Callable

from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import Request

from core.config import Config
from core.drive_settings import DriveSettings
from jobs.destinations import drive_advice as advice
from jobs.destinations import drive_auth
from jobs.destinations.drive_api import FOLDER_MIME, DriveApi
from jobs.destinations.drive_errors import DriveFailure
from jobs.destinations.drive_probe import CheckFailed, describe, probe

Say = Callable[[str], None]


def drive_check(config: Config, say: Say = print) -> int:
    settings = config.drive
    if settings is None:
        say(
            "Google Drive is not configured (no GOOGLE_DRIVE_* variables): backups go to the"
            f" local folder {config.backup_dir}. See docs/google-drive.md."
        )
        return 1
    if settings.personal:
        from jobs.destinations.drive_check_personal import personal_check

        return personal_check(config, say)
    say(
        f"service account  {settings.client_email} (key {settings.private_key_id or '?'},"
        f" from {settings.key_source})"
    )
    say(f"acting as        {settings.impersonate or 'the service account itself (no impersonation)'}")
    say(f"scope            {settings.scope}")
    api = DriveApi(settings)
    try:
        _token(api, settings)
        say("token            ok")
        say(f"drive api        ok, as {_who(api, settings)}")
        folder, shared = _folder(api, settings)
        say(f"folder           {folder}")
        say(f"write probe      {probe(api, settings, shared)}")
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
        api.credentials.refresh(Request())
    except GoogleAuthError as e:
        raise CheckFailed(drive_auth.explain(e, settings)) from None


def _who(api: DriveApi, settings: DriveSettings) -> str:
    try:
        return str(api.about().get("user", {}).get("emailAddress") or "?")
    except DriveFailure as e:
        raise CheckFailed(describe(e, settings, None)) from None


def _folder(api: DriveApi, settings: DriveSettings) -> tuple[str, bool]:
    """Where backups go, described, and whether it is in a shared drive; fails when it is
    missing or cannot hold files."""
    if settings.folder_id is None:
        if settings.impersonate is None:
            raise CheckFailed(
                advice.no_quota(
                    "GOOGLE_DRIVE_FOLDER_ID is not set, so files would go"
                    " to the service account's own My Drive",
                    settings,
                )
            )
        return f"the My Drive of {settings.impersonate} (GOOGLE_DRIVE_FOLDER_ID is not set)", False
    try:
        found = api.get_file(settings.folder_id, "id,name,mimeType,driveId")
    except DriveFailure as e:
        raise CheckFailed(describe(e, settings, None)) from None
    if found is None:
        raise CheckFailed(advice.folder_missing(settings))
    if found.get("mimeType") != FOLDER_MIME:
        raise CheckFailed(
            f"GOOGLE_DRIVE_FOLDER_ID {settings.folder_id} is a file ({found.get('name')!r}), not a folder"
        )
    name = found.get("name")
    if found.get("driveId"):
        return f"{name!r} ({settings.folder_id}) in a shared drive ({found['driveId']})", True
    if settings.impersonate is None:
        raise CheckFailed(
            advice.no_quota(f"the folder {name!r} is in someone's My Drive, not in a shared drive", settings)
        )
    return f"{name!r} ({settings.folder_id}) in a My Drive, as {settings.impersonate}", False

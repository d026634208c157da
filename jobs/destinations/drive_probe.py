"""drive-check's write probe, shared by both modes (service account, personal account):
create a tiny file where backups go and move it to the trash, as a backup of a bad copy
would."""

from __future__ import annotations

from datetime import UTC, datetime

from core.drive_settings import DriveSettings
from jobs.destinations import drive_advice as advice
from jobs.destinations.drive_api import DriveApi
from jobs.destinations.drive_errors import DriveApiError, DriveFailure


class CheckFailed(Exception):
    """One check failed; the message is the advice."""


def probe(api: DriveApi, settings: DriveSettings, shared: bool) -> str:
    """Create a tiny file where backups go, then move it to the trash, as a backup would."""
    parent = settings.folder_id or "root"
    name = f"falback-drive-check-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    metadata = {"name": name, "parents": [parent], "appProperties": {"falback_probe": "1"}}
    try:
        created = api.uploads.multipart(metadata, b"falback drive-check probe\n", "text/plain")
    except DriveFailure as e:
        raise CheckFailed(describe(e, settings, shared)) from None
    notes = []
    if settings.share_anyone:
        try:
            api.share_with_anyone(str(created["id"]))
        except DriveFailure as e:
            notes.append(
                f"but sharing by link (GOOGLE_DRIVE_SHARE_ANYONE) was refused: {e}."
                " An admin policy may forbid links for anyone; backups still work"
            )
    try:
        api.trash_file(str(created["id"]))
    except DriveFailure as e:
        raise CheckFailed(
            f"created the probe file {name!r} but could not move it to the trash:"
            f" {describe(e, settings, shared)}. Remove the probe by hand"
        ) from None
    return " ".join(["created a test file and moved it to the trash: ok", *notes])


def describe(error: DriveFailure, settings: DriveSettings, shared: bool | None) -> str:
    if not isinstance(error, DriveApiError):
        return str(error)
    if error.status == 404:
        return f"{advice.folder_missing(settings)} ({error})"
    return advice.explain(error, settings, shared)

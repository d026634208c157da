"""What a Drive failure means for a job (retry, pause or give up), and the advice an
operator reads, worded for the mode in use.

The mode is where backups go: a shared drive (the service account, or the impersonated
user, is a member), or a My Drive (the impersonated user's, or, misconfigured, the
service account's own, which has no quota). `shared` is None while the target folder
has not been looked up yet; the settings then decide the likely mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from core.drive_settings import DriveSettings
from jobs.destinations.drive_errors import (
    DriveApiError,
    DriveAuthError,
    DriveFailure,
    DriveSignedOut,
    SessionRestart,
)
from jobs.errors import CopyError, DestinationPaused, PermanentError, TransientError

# 403 reasons that mean "this account lacks the role for that" (Drive's error guide).
ROLE_REASONS = {
    "insufficientFilePermissions",
    "forbidden",
    "teamDriveMembershipRequired",
    "cannotAddParent",
    "",
}
CHECK = "run `falback drive-check`"
# A lost sign-in or a full Drive is re-checked this often; drive-login resumes at once.
SIGNED_OUT_PAUSE = timedelta(hours=6)


def in_shared_drive(settings: DriveSettings, shared: bool | None) -> bool:
    # Without impersonation only a shared drive can hold files (no quota of its own).
    # A personal account (OAuth) backs up into its own My Drive unless told otherwise.
    return shared if shared is not None else (settings.impersonate is None and not settings.personal)


def copy_error(error: DriveFailure, settings: DriveSettings, shared: bool | None) -> CopyError:
    """The job's view of a Drive failure: retry later, pause, or give up with a reason."""
    if isinstance(error, DriveSignedOut):
        return DestinationPaused(f"Drive uploads are paused: {error}", datetime.now(UTC) + SIGNED_OUT_PAUSE)
    if isinstance(error, DriveAuthError):
        return PermanentError(f"{error} ({CHECK})")
    if isinstance(error, SessionRestart):
        if error.cause is not None:
            outcome = copy_error(error.cause, settings, shared)
            if outcome.permanent or isinstance(outcome, DestinationPaused):
                return outcome
        return TransientError(str(error))
    if not isinstance(error, DriveApiError):
        return TransientError(str(error), retry_after=error.retry_after)
    if error.upload_cap:
        return upload_cap_pause(error, settings)
    if error.reason == "storageQuotaExceeded" and settings.personal:
        # A person's Drive is full: every upload would fail the same way until space is
        # freed, so pause them all instead of failing file after file.
        return DestinationPaused(
            f"Drive uploads are paused: {storage_full(error, settings, shared)};"
            " they try again by themselves within an hour",
            datetime.now(UTC) + timedelta(seconds=settings.upload_cap_pause),
        )
    if error.status == 403 and not error.retryable:
        return PermanentError(explain(error, settings, shared))
    return TransientError(str(error), retry_after=error.retry_after)


def explain(error: DriveApiError, settings: DriveSettings, shared: bool | None) -> str:
    """Drive's answer plus what to do about it, for a refusal that retrying cannot cure."""
    if error.reason == "storageQuotaExceeded":
        return storage_full(error, settings, shared)
    if error.reason == "teamDriveFileLimitExceeded":
        return then(
            error,
            "The shared drive holds as many items as Drive allows in one shared"
            " drive: point GOOGLE_DRIVE_FOLDER_ID at a folder in another shared drive",
        )
    if error.reason == "insufficientPermissions":
        return then(error, scope_advice(settings))
    if error.status == 403 and error.reason in ROLE_REASONS:
        return then(error, role_advice(settings, shared))
    if error.status == 403:
        return f"{error} ({CHECK})"
    return str(error)


def then(error: DriveFailure, advice: str) -> str:
    """Drive's words, then ours, as two sentences."""
    return f"{str(error).rstrip('.')}. {advice}"


def storage_full(error: DriveApiError, settings: DriveSettings, shared: bool | None) -> str:
    if in_shared_drive(settings, shared):
        return then(
            error,
            "The shared drive is full: the organisation's Workspace storage, or a"
            " storage limit an admin set on this shared drive, is used up. Free space"
            " there or ask a Workspace admin for more storage",
        )
    if settings.personal:
        return then(
            error,
            "The signed-in account's Google storage (Drive, Gmail and Photos"
            " together; 15 GB free) is full: free space or add storage (Google One)",
        )
    if settings.impersonate:
        return then(
            error,
            f"The storage of {settings.impersonate} is full: free space or buy"
            " more, or back up into a shared drive (GOOGLE_DRIVE_FOLDER_ID)",
        )
    return (
        f"Drive refused the upload: a service account has no storage quota ({error.detail[:80]})."
        " Put GOOGLE_DRIVE_FOLDER_ID in a shared drive and add"
        f" {settings.client_email} as a Content manager, or set GOOGLE_DRIVE_IMPERSONATE to a"
        " Workspace user (domain-wide delegation); see docs/google-drive.md"
    )


def no_quota(what: str, settings: DriveSettings) -> str:
    """The target is a My Drive and nobody is impersonated: the service account would own
    the files, and it has no storage."""
    return (
        f"{what}. A service account has no storage quota, so Drive refuses its files there."
        f" Use a folder in a shared drive and add {settings.client_email} to it as a Content"
        " manager, or set GOOGLE_DRIVE_IMPERSONATE to a Workspace user the service account may"
        " act for (domain-wide delegation; docs/google-drive.md)"
    )


def role_advice(settings: DriveSettings, shared: bool | None) -> str:
    who = settings.impersonate or settings.client_email
    if in_shared_drive(settings, shared):
        return (
            f"{who} lacks the role for this in the shared drive: make it a Content manager"
            " (a Contributor can add files but cannot move them to trash, which falback does"
            " with copies that fail verification)"
        )
    return (
        f"{who} cannot change files in the folder {settings.folder_id or 'My Drive'}: it must"
        " own the folder or be an Editor of it"
    )


def scope_advice(settings: DriveSettings) -> str:
    text = f"The token's scope ({settings.scope}) cannot write files: set GOOGLE_DRIVE_SCOPE=drive"
    if settings.impersonate:
        text += (
            " and authorise that scope for the client ID"
            f" {settings.client_id or '(the service account Client ID)'} in the Admin"
            " console (domain-wide delegation)"
        )
    return text


def folder_missing(settings: DriveSettings) -> str:
    """GOOGLE_DRIVE_FOLDER_ID is not there for whoever the token acts as."""
    who = settings.impersonate or settings.client_email
    if settings.impersonate:
        fix = (
            f"share it with {who} as an Editor (or, if it is in a shared drive, add {who} to"
            " that shared drive as a Content manager)"
        )
    else:
        fix = f"add {who} to the shared drive as a Content manager"
    text = (
        f"the folder {settings.folder_id} (GOOGLE_DRIVE_FOLDER_ID) was not found, or {who}"
        f" cannot see it: {fix}"
    )
    if settings.scope.endswith("drive.file"):
        text += (
            ". With the drive.file scope only files falback created are visible: set GOOGLE_DRIVE_SCOPE=drive"
        )
    return text


def upload_cap_pause(error: DriveApiError, settings: DriveSettings) -> DestinationPaused:
    until = datetime.now(UTC) + timedelta(seconds=settings.upload_cap_pause)
    return DestinationPaused(
        f"Drive's daily upload cap (750 GB per day) was reached ({error.status} {error.reason}:"
        f" {error.detail}); Drive uploads pause until {until:%Y-%m-%d %H:%M} UTC",
        until,
    )


@contextmanager
def classified(settings: DriveSettings, shared: bool | None) -> Iterator[None]:
    """Turn a Drive failure into the job's error classes (retry, pause or give up)."""
    try:
        yield
    except DriveFailure as e:
        raise copy_error(e, settings, shared) from e

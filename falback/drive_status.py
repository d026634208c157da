"""The Drive lines of `falback status` for a My Drive (a personal account, or a user a
service account acts as): storage used of the limit against what is still to back up.
A shared drive has no quota of its own to show."""

from __future__ import annotations

from google.auth.exceptions import GoogleAuthError

from core.config import Config
from core.logs import redact
from db.connection import connection
from jobs.destinations.drive_api import DriveApi
from jobs.destinations.drive_errors import DriveFailure
from jobs.destinations.drive_quota import quota


def drive_lines(config: Config) -> list[str]:
    settings = config.drive
    if settings is None or not (settings.personal or settings.impersonate) or not config.database_url:
        return []
    api = DriveApi(settings, config.database_url)
    try:
        about = api.about("storageQuota")
        with connection(config.database_url, application_name="falback-status") as conn:
            found = quota(about, conn)
    except (DriveFailure, GoogleAuthError, OSError) as e:
        # A revoked sign-in or a pause is an alarm of its own above; this says why the
        # quota is not shown.
        return [f"drive storage: not known ({redact(str(e))[:200]})"]
    finally:
        api.close()
    return [f"drive {line}" if line.startswith("storage") else line for line in found.lines()]

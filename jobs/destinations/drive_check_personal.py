"""`falback drive-check` in the personal-account mode: who is signed in, with which
scope, how full their Drive is, whether the files still to back up will fit, and a
test upload where the backups go (drive_check.py does the service-account modes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import Request

from core.config import Config
from core.drive_settings import DriveSettings
from db import drive_tokens
from db.connection import Connection, connection
from jobs.destinations import drive_auth
from jobs.destinations.drive_api import DriveApi
from jobs.destinations.drive_errors import DriveFailure
from jobs.destinations.drive_oauth import LOGIN_FIX
from jobs.destinations.drive_probe import CheckFailed, probe
from jobs.destinations.drive_quota import quota


def personal_check(config: Config, say: Callable[[str], None]) -> int:
    settings = config.drive
    assert settings is not None and settings.personal
    say(f"mode             personal Google account (OAuth client {settings.oauth_client_id})")
    say(f"scope            {settings.scope}")
    if config.database_url is None:
        say("PROBLEM          DATABASE_URL is not set: the sign-in is kept in Postgres")
        return 1
    with connection(config.database_url, application_name="falback-drive-check") as conn:
        sign_in = drive_tokens.current(conn)
        conn.rollback()
        api = DriveApi(settings, config.database_url)
        try:
            return _check(api, settings, sign_in, conn, say)
        finally:
            api.close()


def _check(
    api: DriveApi,
    settings: DriveSettings,
    sign_in: drive_tokens.SignIn | None,
    conn: Connection,
    say: Callable[[str], None],
) -> int:
    try:
        if sign_in is None:
            raise CheckFailed(f"no Google account is signed in: {LOGIN_FIX}")
        if sign_in.revoked_at is not None:
            raise CheckFailed(
                f"the sign-in of {sign_in.account_email} is no longer valid"
                f" ({sign_in.revoked_reason}): {LOGIN_FIX}"
            )
        _token(api, settings)
        about = _call(lambda: api.about("user(emailAddress),storageQuota"))
        say(f"account          {about.get('user', {}).get('emailAddress') or '?'} (token ok)")
        for line in quota(about, conn).lines():
            say(line)
        where = (
            f"GOOGLE_DRIVE_FOLDER_ID {settings.folder_id}"
            if settings.folder_id
            else "falback/<kind>/<YYYY-MM>/ in My Drive, made and owned by falback"
        )
        say(f"folder           {where}")
        say(f"write probe      {probe(api, settings, False)}")
    except CheckFailed as e:
        say(f"PROBLEM          {e}")
        say("drive-check: Drive is not usable yet")
        return 1
    say("drive-check: ok, backups can go to Drive")
    return 0


def _token(api: DriveApi, settings: DriveSettings) -> None:
    try:
        api.credentials.refresh(Request())
    except GoogleAuthError as e:
        raise CheckFailed(str(drive_auth.failure(e, settings))) from None


def _call(request: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return dict(request())
    except DriveFailure as e:
        raise CheckFailed(str(e)) from None

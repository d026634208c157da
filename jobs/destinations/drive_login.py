"""`falback drive-login`: sign a personal Google account in with Google's OAuth device
flow ("OAuth 2.0 for TV and Limited-Input Device Applications"), the one that needs no
browser on the server: falback prints a URL and a code, the user opens the URL on any
device, enters the code and approves; falback polls the token endpoint meanwhile.

The device flow allows only a short list of scopes; among Drive's only drive.file and
drive.appdata. drive.file, the default, is enough: falback only touches the files it made.
For the full drive scope (GOOGLE_DRIVE_SCOPE=drive) drive-login uses the installed-app
flow with a loopback redirect pasted back instead (drive_login_paste.py).

The refresh token is stored encrypted (drive_oauth.Vault); a paused Drive destination
resumes at once, every file it held back made due again. No token or device code is
ever printed or logged; the user code is printed (the user must type it) but not logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from core.drive_settings import DriveSettings
from db import drive_state, drive_tokens
from db.connection import Connection, connection
from jobs.destinations.drive_login_paste import PasteFailed, sign_in_by_paste
from jobs.destinations.drive_oauth import Vault

log = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# The Drive scopes Google allows on the device flow ("Allowed scopes" of its page).
DEVICE_FLOW_SCOPES = {
    "https://www.googleapis.com/auth/drive.file",
    "https://www.googleapis.com/auth/drive.appdata",
}
SLOW_DOWN_STEP = 5.0  # RFC 8628 section 3.5: add 5 seconds to the interval on slow_down
Say = Callable[[str], None]


class LoginFailed(Exception):
    """The sign-in did not complete; the message says why and what to do."""


def drive_login(
    settings: DriveSettings,
    database_url: str,
    say: Say = print,
    sleep: Callable[[float], None] = time.sleep,
    redis_url: str | None = None,
    ask: Callable[[str], str] = input,
) -> int:
    if not settings.personal:
        say(
            "drive-login signs in a personal Google account: set GOOGLE_DRIVE_OAUTH_CLIENT_ID and"
            " GOOGLE_DRIVE_OAUTH_CLIENT_SECRET (and FALBACK_TOKEN_KEY) first; see docs/google-drive.md"
        )
        return 2
    with requests.Session() as http:
        try:
            if settings.scope in DEVICE_FLOW_SCOPES:
                tokens = _sign_in(settings, http, say, sleep)
            else:
                tokens = _granted(settings, sign_in_by_paste(settings, http, say, ask))
            email = _account(settings, http, str(tokens["access_token"]))
        except (LoginFailed, PasteFailed) as e:
            say(f"drive-login: {e}")
            return 1
        except requests.RequestException as e:
            say(f"drive-login: could not reach Google ({type(e).__name__}); try again")
            return 1
    vault = Vault(settings)
    expires_at = datetime.now(UTC) + timedelta(seconds=int(tokens.get("expires_in") or 3600))
    with connection(database_url, application_name="falback-drive-login") as conn:
        assert settings.oauth_client_id is not None
        drive_tokens.save_login(
            conn,
            settings.oauth_client_id,
            email,
            settings.scope,
            vault.seal(str(tokens["refresh_token"])),
            vault.seal(str(tokens["access_token"])),
            expires_at,
        )
        drive_tokens.forget_folders(conn)
        resumed = drive_state.resume(conn, "drive")
        conn.commit()
        woken = _wake(conn, redis_url) if redis_url and resumed is not None else 0
    log.info("Drive sign-in stored for %s%s", email, "" if resumed is None else "; Drive resumed")
    say(f"drive-login: signed in as {email} (scope {settings.scope}).")
    if resumed is not None:
        say(
            f"drive-login: Drive uploads resume; every file that waited is due again"
            f" ({woken} waiting job(s) started again; the sweep re-queues any other)."
        )
    say("Next: falback drive-check")
    return 0


def _wake(conn: Connection, redis_url: str) -> int:
    from redis import Redis

    from jobs.resume import wake_held_back

    redis = Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=30)
    try:
        return wake_held_back(conn, redis)
    finally:
        redis.close()


def _sign_in(
    settings: DriveSettings, http: requests.Session, say: Say, sleep: Callable[[float], None]
) -> dict[str, Any]:
    answer = http.post(
        settings.device_code_uri,
        timeout=30,
        data={"client_id": settings.oauth_client_id, "scope": settings.scope},
    )
    body = _json(answer)
    if answer.status_code != 200:
        raise LoginFailed(_refused(settings, str(body.get("error") or answer.status_code)))
    url = body.get("verification_url") or body.get("verification_uri")
    say(f"To let falback back up to your Google Drive, open {url} on any device,")
    say(f"sign in with the Google account to back up to, and enter the code {body['user_code']}")
    interval = float(body.get("interval") or 5)
    deadline = time.monotonic() + float(body.get("expires_in") or 1800)
    say("Waiting for approval...")
    while True:
        sleep(interval)
        if time.monotonic() > deadline:
            raise LoginFailed("the code expired before it was approved; run drive-login again")
        answer = http.post(
            settings.token_uri,
            timeout=30,
            data={
                "client_id": settings.oauth_client_id,
                "client_secret": settings.oauth_client_secret,
                "device_code": body["device_code"],
                "grant_type": DEVICE_GRANT,
            },
        )
        tokens = _json(answer)
        if answer.status_code == 200:
            return _granted(settings, tokens)
        error = str(tokens.get("error") or answer.status_code)
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
            continue
        if error == "access_denied":
            raise LoginFailed(
                "access was denied on the consent screen; run drive-login again and"
                " choose Allow (tick the Drive permission)"
            )
        if error == "expired_token":
            raise LoginFailed("the code expired before it was approved; run drive-login again")
        raise LoginFailed(_refused(settings, error))


def _granted(settings: DriveSettings, tokens: dict[str, Any]) -> dict[str, Any]:
    if not tokens.get("access_token") or not tokens.get("refresh_token"):
        raise LoginFailed("Google's answer had no refresh token; run drive-login again")
    granted = str(tokens.get("scope") or settings.scope).split()
    if settings.scope not in granted:
        raise LoginFailed(
            f"the permission {settings.scope} was not granted (the box on the"
            " consent screen was left unticked); run drive-login again and allow it"
        )
    return tokens


def _account(settings: DriveSettings, http: requests.Session, access_token: str) -> str:
    answer = http.get(
        f"{settings.api_base_url}/drive/v3/about",
        timeout=30,
        params={"fields": "user(emailAddress)"},
        headers={"Authorization": f"Bearer {access_token}"},
    )
    if answer.status_code != 200:
        raise LoginFailed(
            f"signed in, but Drive answered {answer.status_code} to about.get: is the"
            " Google Drive API enabled in the Cloud project?"
        )
    return str(_json(answer).get("user", {}).get("emailAddress") or "?")


def _refused(settings: DriveSettings, error: str) -> str:
    if error == "invalid_client":
        return (
            "Google does not know this OAuth client (invalid_client): check"
            " GOOGLE_DRIVE_OAUTH_CLIENT_ID/_SECRET, and that the client's type is \"TVs and"
            ' Limited Input devices"'
        )
    if error in ("invalid_scope", "restricted_client"):
        return (
            f"Google refused the scope {settings.scope} on the device flow ({error}): it allows"
            " only drive.file (the default) or drive.appdata; unset GOOGLE_DRIVE_SCOPE"
        )
    return f"Google refused the sign-in ({error})"


def _json(answer: requests.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

"""Credentials of the personal-account mode: the signed-in user's token, shared by every
worker through Postgres (db/drive_tokens.py).

`SharedCredentials` is a google.oauth2 user credential whose `refresh` reads the shared
row instead of asking Google each time. A worker whose token is missing, rejected (401)
or due within REFRESH_MARGIN locks the row; if another worker refreshed meanwhile it
takes that token, else it makes the one refresh-token grant and stores the result. So
however many workers there are, one refresh serves them all. invalid_grant marks the
sign-in revoked and raises `SignedOut`: Drive uploads pause until `falback drive-login`.

Tokens are encrypted at rest with FALBACK_TOKEN_KEY and never appear in a log line or
an error message.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from google.auth.exceptions import RefreshError
from google.oauth2 import _client
from google.oauth2.credentials import Credentials

from core.drive_settings import DriveSettings
from db import drive_tokens
from db.connection import connection

log = logging.getLogger(__name__)

# google-auth counts a token as expired 3m45s early; refresh before that, once for all.
REFRESH_MARGIN = timedelta(minutes=5)
LOGIN_FIX = "run `falback drive-login` to sign in again"


class SignedOut(RefreshError):
    """No usable sign-in: never signed in, revoked, or the refresh token expired."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # type: ignore[no-untyped-call]


class Vault:
    """Fernet encryption of tokens with FALBACK_TOKEN_KEY."""

    def __init__(self, settings: DriveSettings) -> None:
        assert settings.token_key is not None, "the personal-account mode requires FALBACK_TOKEN_KEY"
        self._fernet = Fernet(settings.token_key.encode())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise SignedOut(
                "the stored Google sign-in cannot be decrypted with FALBACK_TOKEN_KEY"
                f" (was the key changed?): {LOGIN_FIX}"
            ) from None


class SharedCredentials(Credentials):
    def __init__(self, settings: DriveSettings, database_url: str) -> None:
        super().__init__(
            None,
            token_uri=settings.token_uri,
            client_id=settings.oauth_client_id,
            client_secret=settings.oauth_client_secret,
            scopes=[settings.scope],
        )  # type: ignore[no-untyped-call]
        self._settings = settings
        self._database_url = database_url

    def refresh(self, request: Any) -> None:
        token, expires_at = shared_token(self._settings, self._database_url, request, rejected=self.token)
        self.token = token
        self.expiry = expires_at.astimezone(UTC).replace(tzinfo=None)  # google-auth: naive UTC


def shared_token(
    settings: DriveSettings, database_url: str, request: Any, rejected: str | None
) -> tuple[str, datetime]:
    """A usable access token and its expiry: the shared one, or a new one for everybody."""
    vault = Vault(settings)
    with connection(database_url, application_name="falback-drive-token") as conn:
        sign_in = drive_tokens.current(conn, lock=True)
        if sign_in is None:
            raise SignedOut(f"no Google account is signed in: {LOGIN_FIX}")
        if sign_in.revoked_at is not None:
            raise SignedOut(
                f"Google no longer accepts the sign-in of {sign_in.account_email}"
                f" ({sign_in.revoked_reason}): {LOGIN_FIX}"
            )
        now = datetime.now(UTC)
        if (
            sign_in.access_token
            and sign_in.access_expires_at
            and sign_in.access_expires_at > now + REFRESH_MARGIN
        ):
            shared = vault.open(sign_in.access_token)
            if shared != rejected:
                return shared, sign_in.access_expires_at
        try:
            access, new_refresh, expiry, _ = _client.refresh_grant(  # type: ignore[no-untyped-call]
                request,
                settings.token_uri,
                vault.open(sign_in.refresh_token),
                settings.oauth_client_id,
                settings.oauth_client_secret,
                scopes=[settings.scope],
            )
        except RefreshError as e:
            code = oauth_error(e)
            if code == "invalid_grant":
                reason = (
                    "Google answered invalid_grant: access was revoked, the password"
                    " changed, or the refresh token of an app in Testing expired after 7 days"
                )
                drive_tokens.mark_revoked(conn, reason)
                conn.commit()
                log.error(
                    "Drive sign-in of %s is no longer valid (%s); %s",
                    sign_in.account_email,
                    reason,
                    LOGIN_FIX,
                )
                raise SignedOut(
                    f"Google no longer accepts the sign-in of {sign_in.account_email} ({reason}): {LOGIN_FIX}"
                ) from None
            raise
        expires_at = expiry.replace(tzinfo=UTC) if expiry is not None else now + timedelta(hours=1)
        drive_tokens.save_refresh(
            conn, vault.seal(access), expires_at, vault.seal(new_refresh) if new_refresh else None
        )
        log.info(
            "refreshed the Drive access token of %s (valid until %s)",
            sign_in.account_email,
            f"{expires_at:%H:%M:%S} UTC",
        )
        return access, expires_at


def oauth_error(error: RefreshError) -> str:
    """The OAuth error code of a refused token request ("invalid_grant", ...), or ""."""
    data = error.args[1] if len(error.args) > 1 else None
    if isinstance(data, dict):
        return str(data.get("error") or "")
    text = str(error.args[0]) if error.args else ""
    return text.split(":", 1)[0].strip()

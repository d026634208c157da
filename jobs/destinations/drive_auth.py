"""Service-account credentials for Drive, and plain words for what can go wrong with them.

Tokens come from the OAuth2 JWT-bearer exchange at the key's token URI (google-auth
signs the assertion for Google's endpoint whatever that URI is). With
GOOGLE_DRIVE_IMPERSONATE the token is for that user (domain-wide delegation), so files
count against the user's quota instead of the service account's, which has none.
"""

from __future__ import annotations

from typing import Any

from google.auth.exceptions import GoogleAuthError, RefreshError
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from core.drive_settings import DriveSettings
from jobs.destinations.drive_errors import (
    DriveAuthError,
    DriveFailure,
    DriveSignedOut,
    DriveUnreachable,
)

USER_AGENT = "falback/0.1"


def credentials(settings: DriveSettings, database_url: str | None = None) -> Any:
    """The service account's credentials, or in the personal-account mode the signed-in
    user's, shared through Postgres (drive_oauth.py)."""
    if settings.personal:
        from jobs.destinations.drive_oauth import SharedCredentials

        if database_url is None:
            raise ValueError(
                "the personal-account Drive mode needs DATABASE_URL (the sign-in is kept in Postgres)"
            )
        return SharedCredentials(settings, database_url)
    # google-auth ships without type hints; Any keeps mypy --strict honest about that.
    creds: Any = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        settings.service_account_info(), scopes=[settings.scope], subject=settings.impersonate
    )
    return creds


def session(settings: DriveSettings, creds: Any) -> AuthorizedSession:
    """A requests session for every Drive call (metadata and uploads) that adds a fresh
    token to each request (and refreshes it on a 401). Bodies are always bytes, so the
    resend after a refresh is safe."""
    authed = AuthorizedSession(creds)  # type: ignore[no-untyped-call]
    authed.headers["User-Agent"] = USER_AGENT
    return authed


def explain(error: GoogleAuthError, settings: DriveSettings) -> str:
    """What a failed token request means, for an operator; never the key or a token."""
    text = str(error.args[0]) if error.args else type(error).__name__
    code = text.split(":", 1)[0].strip()
    if settings.personal:
        if code == "invalid_client":
            return (
                f"Google refused the OAuth client {settings.oauth_client_id} ({text}): check"
                " GOOGLE_DRIVE_OAUTH_CLIENT_ID and GOOGLE_DRIVE_OAUTH_CLIENT_SECRET"
            )
        return f"could not get a Google access token for the signed-in account: {text[:300]}"
    who = settings.client_email
    if isinstance(error, RefreshError) and code == "unauthorized_client" and settings.impersonate:
        return (
            f"Google refused to let {who} act as {settings.impersonate} ({text}). Set up"
            " domain-wide delegation: Admin console > Security > Access and data control >"
            f" API controls > Manage domain-wide delegation, add client ID"
            f" {settings.client_id or '(the service account Client ID)'} with scope {settings.scope}"
        )
    if isinstance(error, RefreshError) and code == "invalid_scope":
        return f"Google refused the scope {settings.scope} ({text}); set GOOGLE_DRIVE_SCOPE=drive"
    if isinstance(error, RefreshError) and code in ("invalid_grant", "invalid_client"):
        return (
            f"Google refused the service account key of {who} ({text}). The key may have been"
            f" deleted or belong to another account ({settings.key_source}); check the machine's"
            " clock too, then create a new JSON key in Cloud Console > IAM > Service accounts"
        )
    return f"could not get a Google access token for {who}: {text[:300]}"


def is_retryable(error: GoogleAuthError) -> bool:
    """A token request that failed on the way (network, Google 5xx), not a refusal."""
    return bool(getattr(error, "retryable", False)) or not isinstance(error, RefreshError)


def failure(error: GoogleAuthError, settings: DriveSettings) -> DriveFailure:
    """A failed token request as a DriveFailure: a refusal is final, the rest is retried,
    and a lost sign-in (personal-account mode) pauses Drive until the next drive-login."""
    from jobs.destinations.drive_oauth import SignedOut

    if isinstance(error, SignedOut):
        return DriveSignedOut(str(error.args[0]) if error.args else "signed out")
    message = explain(error, settings)
    return DriveUnreachable(message) if is_retryable(error) else DriveAuthError(message)

"""The personal-account mode of the Drive settings: an OAuth client of the user's own
Cloud project (GOOGLE_DRIVE_OAUTH_CLIENT_ID / _SECRET) instead of a service account.

falback then acts as the Google account that ran `falback drive-login`; its refresh
token lives in Postgres, encrypted with FALBACK_TOKEN_KEY (a Fernet key). The scope
defaults to drive.file (falback sees only the files it made), which Google allows on
the device flow and which is not a sensitive scope (docs/google-drive.md).
"""

from __future__ import annotations

from typing import Any

from core.env import ConfigError, EnvReader

OAUTH_NAMES = (
    "GOOGLE_DRIVE_OAUTH_CLIENT_ID",
    "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET",
    "GOOGLE_DRIVE_DEVICE_CODE_URI",
    "GOOGLE_DRIVE_AUTH_URI",
)
SERVICE_ACCOUNT_NAMES = (
    "GOOGLE_DRIVE_PRIVATE_KEY",
    "GOOGLE_DRIVE_CLIENT_EMAIL",
    "GOOGLE_DRIVE_KEY_FILE",
    "GOOGLE_DRIVE_IMPERSONATE",
)
TOKEN_KEY = "FALBACK_TOKEN_KEY"
GOOGLE_DEVICE_CODE_URI = "https://oauth2.googleapis.com/device/code"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/v2/auth"
_CLIENT_ID_SUFFIX = ".apps.googleusercontent.com"


def wants_oauth(reader: EnvReader) -> bool:
    return any(reader.text(n) for n in OAUTH_NAMES[:2])


def oauth_fields(reader: EnvReader) -> dict[str, Any]:
    """The DriveSettings fields of the personal-account mode, checked."""
    client_id = reader.text("GOOGLE_DRIVE_OAUTH_CLIENT_ID")
    secret = reader.text("GOOGLE_DRIVE_OAUTH_CLIENT_SECRET")
    for name, value in (
        ("GOOGLE_DRIVE_OAUTH_CLIENT_ID", client_id),
        ("GOOGLE_DRIVE_OAUTH_CLIENT_SECRET", secret),
    ):
        if not value:
            raise ConfigError(
                f"{name} is missing (the personal-account mode needs both"
                " GOOGLE_DRIVE_OAUTH_CLIENT_ID and GOOGLE_DRIVE_OAUTH_CLIENT_SECRET"
                ' of an OAuth client of type "TVs and Limited Input devices")'
            )
    assert client_id is not None and secret is not None
    clash = [n for n in SERVICE_ACCOUNT_NAMES if reader.text(n)]
    if clash:
        raise ConfigError(
            f"set either the OAuth client (GOOGLE_DRIVE_OAUTH_CLIENT_ID) or a service"
            f" account ({', '.join(clash)}), not both"
        )
    if not client_id.endswith(_CLIENT_ID_SUFFIX) or " " in client_id:
        raise ConfigError(
            "GOOGLE_DRIVE_OAUTH_CLIENT_ID must be an OAuth client ID ending in"
            f" {_CLIENT_ID_SUFFIX} (Cloud Console > Google Auth Platform > Clients)"
        )
    if client_id in secret or " " in secret:
        raise ConfigError(
            "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET does not look like a client secret"
            " (copy the secret shown with the client, not its ID)"
        )
    return {
        "mode": "oauth",
        "oauth_client_id": client_id,
        "oauth_client_secret": secret,
        "token_key": token_key(reader),
    }


def token_key(reader: EnvReader) -> str:
    value = reader.text(TOKEN_KEY)
    if value is None:
        raise ConfigError(
            f"{TOKEN_KEY} is missing: the personal-account mode keeps the Google"
            " refresh token encrypted in Postgres with it. Make one with: python -c"
            " 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    from cryptography.fernet import Fernet

    try:
        Fernet(value.encode())
    except ValueError:
        raise ConfigError(
            f"{TOKEN_KEY} is not a Fernet key (32 url-safe base64-encoded bytes, 44 characters)"
        ) from None
    return value

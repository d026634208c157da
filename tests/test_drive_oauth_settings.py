"""The personal-account mode's settings: the OAuth client selects it, drive.file is the
default scope, FALBACK_TOKEN_KEY must be a Fernet key, and no secret shows in repr or in
a message."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from core.config import Config, ConfigError
from tests.support.drive import make_key

CLIENT_ID = "123-abc.apps.googleusercontent.com"
SECRET = "GOCSPX-s3cr3t-value-for-tests"
TOKEN_KEY = Fernet.generate_key().decode()


def oauth_env(**extra: str) -> dict[str, str]:
    env = {
        "GOOGLE_DRIVE_OAUTH_CLIENT_ID": CLIENT_ID,
        "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET": SECRET,
        "FALBACK_TOKEN_KEY": TOKEN_KEY,
        **extra,
    }
    return {k: v for k, v in env.items() if v}


def test_the_oauth_client_selects_the_personal_mode_with_drive_file() -> None:
    config = Config.from_env(oauth_env())
    drive = config.drive
    assert drive is not None and drive.personal and drive.mode == "oauth"
    assert drive.scope == "https://www.googleapis.com/auth/drive.file"
    assert drive.folder_id is None  # falback makes and owns falback/<kind>/<YYYY-MM>/
    assert (drive.oauth_client_id, drive.oauth_client_secret, drive.token_key) == (
        CLIENT_ID,
        SECRET,
        TOKEN_KEY,
    )
    assert drive.device_code_uri == "https://oauth2.googleapis.com/device/code"
    assert drive.auth_uri == "https://accounts.google.com/o/oauth2/v2/auth"
    for secret in (SECRET, TOKEN_KEY):
        assert secret not in repr(config) and secret not in repr(drive)


def test_the_full_drive_scope_only_when_asked() -> None:
    drive = Config.from_env(oauth_env(GOOGLE_DRIVE_SCOPE="drive")).drive
    assert drive is not None and drive.scope == "https://www.googleapis.com/auth/drive"


def test_a_service_account_key_keeps_its_mode() -> None:
    key = make_key()
    drive = Config.from_env(
        {
            "GOOGLE_DRIVE_PRIVATE_KEY": key.private_pem,
            "GOOGLE_DRIVE_CLIENT_EMAIL": "a@b.iam.gserviceaccount.com",
        }
    ).drive
    assert drive is not None and not drive.personal and drive.scope.endswith("/drive")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (oauth_env(GOOGLE_DRIVE_OAUTH_CLIENT_SECRET=""), "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET is missing"),
        (oauth_env(GOOGLE_DRIVE_OAUTH_CLIENT_ID=""), "GOOGLE_DRIVE_OAUTH_CLIENT_ID is missing"),
        (oauth_env(GOOGLE_DRIVE_OAUTH_CLIENT_ID="123"), "must be an OAuth client ID ending in"),
        (oauth_env(FALBACK_TOKEN_KEY=""), "FALBACK_TOKEN_KEY is missing"),
        (oauth_env(FALBACK_TOKEN_KEY="not-a-key"), "FALBACK_TOKEN_KEY is not a Fernet key"),
        (oauth_env(GOOGLE_DRIVE_CLIENT_EMAIL="a@b.iam.gserviceaccount.com"), "not both"),
        (oauth_env(GOOGLE_DRIVE_AUTH_URI="http://example.com/auth"), "must be an https URL"),
        (oauth_env(GOOGLE_DRIVE_DEVICE_CODE_URI="http://example.com/device"), "must be an https URL"),
    ],
)
def test_strict_messages_without_secrets(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    assert words in str(caught.value)
    assert SECRET not in str(caught.value) and TOKEN_KEY not in str(caught.value)

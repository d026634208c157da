"""GOOGLE_DRIVE_* settings: the user's variables (escaped newlines), a key file, strict
validation with messages that name the variable and never show the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import Config, ConfigError
from core.drive_settings import DEFAULT_CHUNK_SIZE, DEFAULT_SCOPE, GOOGLE_API_BASE_URL
from tests.support.drive import SA_EMAIL, make_key, write_key_file

KEY = make_key()
ESCAPED = KEY.private_pem.replace("\n", "\\n")


def user_env(**extra: str) -> dict[str, str]:
    """The six variables of the user's note, the key pasted with literal \\n."""
    return {
        "GOOGLE_DRIVE_PROJECT_ID": "demo-project",
        "GOOGLE_DRIVE_PRIVATE_KEY_ID": "k1",
        "GOOGLE_DRIVE_PRIVATE_KEY": ESCAPED,
        "GOOGLE_DRIVE_CLIENT_EMAIL": SA_EMAIL,
        "GOOGLE_DRIVE_CLIENT_ID": "1234567890",
        "GOOGLE_DRIVE_FOLDER_ID": "folder-1",
        **extra,
    }


def test_the_users_variables_with_escaped_newlines() -> None:
    config = Config.from_env(user_env())
    drive = config.drive
    assert drive is not None
    assert drive.private_key == KEY.private_pem  # \n became newlines
    assert (drive.client_email, drive.private_key_id, drive.project_id, drive.client_id) == (
        SA_EMAIL,
        "k1",
        "demo-project",
        "1234567890",
    )
    assert (drive.folder_id, drive.impersonate, drive.scope, drive.chunk_size) == (
        "folder-1",
        None,
        DEFAULT_SCOPE,
        DEFAULT_CHUNK_SIZE,
    )
    assert drive.api_base_url == GOOGLE_API_BASE_URL
    assert drive.token_uri == "https://oauth2.googleapis.com/token"
    assert drive.key_source == "GOOGLE_DRIVE_PRIVATE_KEY"
    assert "PRIVATE KEY" not in repr(config) and ESCAPED[40:80] not in repr(config)
    # Child processes get the same settings back.
    assert Config.from_env(config.as_env()).drive == drive


@pytest.mark.parametrize(
    "pasted", [f'"{ESCAPED}"', f"'{ESCAPED}'", KEY.private_pem, KEY.private_pem.replace("\n", "\r\n")]
)
def test_the_key_pasted_in_other_ways(pasted: str) -> None:
    drive = Config.from_env(user_env(GOOGLE_DRIVE_PRIVATE_KEY=pasted)).drive
    assert drive is not None and drive.private_key.strip() == KEY.private_pem.strip()


def test_a_key_file_and_its_token_uri(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "sa.json", KEY, token_uri="https://oauth2.googleapis.com/token")
    drive = Config.from_env(
        {
            "GOOGLE_DRIVE_KEY_FILE": str(path),
            "GOOGLE_DRIVE_IMPERSONATE": "a@b.co",
            "GOOGLE_DRIVE_SCOPE": "drive.file",
            "GOOGLE_DRIVE_CHUNK_SIZE": "32MiB",
            "GOOGLE_DRIVE_SHARE_ANYONE": "true",
        }
    ).drive
    assert drive is not None
    assert (drive.client_email, drive.private_key, drive.impersonate) == (SA_EMAIL, KEY.private_pem, "a@b.co")
    assert drive.scope == "https://www.googleapis.com/auth/drive.file"
    assert drive.chunk_size == 32 * 1024 * 1024 and drive.share_anyone
    assert drive.key_source == f"GOOGLE_DRIVE_KEY_FILE ({path})"
    assert drive.folder_id is None  # the impersonated user's My Drive root
    emulated = Config.from_env(
        {
            "GOOGLE_DRIVE_KEY_FILE": str(path),
            "GOOGLE_DRIVE_TOKEN_URI": "http://127.0.0.1:9/token",
            "GOOGLE_DRIVE_API_BASE_URL": "http://127.0.0.1:9/",
        }
    ).drive
    assert emulated is not None
    assert (emulated.token_uri, emulated.api_base_url) == ("http://127.0.0.1:9/token", "http://127.0.0.1:9")


def test_google_application_credentials_is_the_fallback_key_file(tmp_path: Path) -> None:
    path = write_key_file(tmp_path / "sa.json", KEY)
    alone = Config.from_env({"GOOGLE_APPLICATION_CREDENTIALS": str(path)})
    assert alone.drive is None, "set for some other Google library: not a request for Drive"
    drive = Config.from_env(
        {"GOOGLE_APPLICATION_CREDENTIALS": str(path), "GOOGLE_DRIVE_FOLDER_ID": "f"}
    ).drive
    assert drive is not None and drive.key_source == f"GOOGLE_APPLICATION_CREDENTIALS ({path})"


def test_nothing_set_means_the_local_folder() -> None:
    assert Config.from_env({}).drive is None and Config().drive is None


def bad_key_file(tmp_path: Path, content: str) -> str:
    path = tmp_path / "k.json"
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GOOGLE_DRIVE_FOLDER_ID": "f"}, "no service-account key: set GOOGLE_DRIVE_PRIVATE_KEY and"),
        (user_env(GOOGLE_DRIVE_CLIENT_EMAIL=""), "GOOGLE_DRIVE_CLIENT_EMAIL is missing"),
        (user_env(GOOGLE_DRIVE_CLIENT_EMAIL="falback"), "GOOGLE_DRIVE_CLIENT_EMAIL: the client email must"),
        (
            user_env(GOOGLE_DRIVE_PRIVATE_KEY=ESCAPED[:200]),
            "GOOGLE_DRIVE_PRIVATE_KEY: the private key is not",
        ),
        (
            user_env(
                GOOGLE_DRIVE_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\\nMIIsecret\\n-----END PRIVATE KEY-----"
            ),
            "GOOGLE_DRIVE_PRIVATE_KEY: the private key is not a PEM RSA key",
        ),
        (user_env(GOOGLE_DRIVE_KEY_FILE="/x.json"), "set either GOOGLE_DRIVE_KEY_FILE or"),
        (
            {"GOOGLE_DRIVE_KEY_FILE": "/nonexistent/key.json"},
            "GOOGLE_DRIVE_KEY_FILE: cannot read /nonexistent",
        ),
        (user_env(GOOGLE_DRIVE_IMPERSONATE="alice"), "GOOGLE_DRIVE_IMPERSONATE must be a user's email"),
        (
            user_env(GOOGLE_DRIVE_CHUNK_SIZE="1000000"),
            "GOOGLE_DRIVE_CHUNK_SIZE must be a multiple of 256 KiB",
        ),
        (user_env(GOOGLE_DRIVE_CHUNK_SIZE="big"), "GOOGLE_DRIVE_CHUNK_SIZE must be a size in bytes"),
        (user_env(GOOGLE_DRIVE_CHUNK_SIZE="2048MiB"), "GOOGLE_DRIVE_CHUNK_SIZE must be at most 1 GiB"),
        (user_env(GOOGLE_DRIVE_SCOPE="gmail.send"), "GOOGLE_DRIVE_SCOPE must be a Drive scope"),
        (user_env(GOOGLE_DRIVE_SHARE_ANYONE="sure"), "GOOGLE_DRIVE_SHARE_ANYONE must be true or false"),
        (user_env(GOOGLE_DRIVE_MAX_RETRIES="-1"), "GOOGLE_DRIVE_MAX_RETRIES must be at least 0"),
        (user_env(GOOGLE_DRIVE_API_BASE_URL="http://drive.example.com"), "must be an https URL (or http on"),
        (user_env(GOOGLE_DRIVE_API_BASE_URL="http://127.0.0.1:1/drive/v3"), "a base URL without a path"),
        (
            user_env(GOOGLE_DRIVE_FOLDER="x"),
            "GOOGLE_DRIVE_FOLDER is not a falback setting (did you mean GOOGLE_DRIVE_FOLDER_ID?)",
        ),
    ],
)
def test_bad_settings_stop_start_up(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    assert message in str(caught.value)
    assert "MII" not in str(caught.value) and "secret" not in str(caught.value)


def test_bad_key_files(tmp_path: Path) -> None:
    for content, message in (
        ("{not json", "is not a JSON key file"),
        (json.dumps({"type": "authorized_user", "client_id": "x"}), "is not a service-account key"),
        (json.dumps({"type": "service_account", "client_email": SA_EMAIL}), "has no private_key"),
    ):
        with pytest.raises(ConfigError, match=message):
            Config.from_env({"GOOGLE_DRIVE_KEY_FILE": bad_key_file(tmp_path, content)})


def test_settings_are_checked_when_a_test_builds_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GOOGLE_DRIVE_CHUNK_SIZE"):
        Config(google=user_env(GOOGLE_DRIVE_CHUNK_SIZE="7"))
    config = Config(google=user_env())
    assert config.drive is not None and config.replace(max_attempts=2).drive == config.drive

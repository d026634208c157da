"""`falback drive-login`: Google's device flow against the emulator, with the approval
scripted; the refresh token lands encrypted in Postgres and nothing secret is printed."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import requests

from core.config import Config
from db.connection import Connection
from jobs.destinations.drive_login import drive_login
from tests.support.drive_oauth import (
    BOB,
    Personal,
    personal_config,
    sign_in_row,
)
from tests.support.processes import falback


def login(config: Config) -> tuple[int, list[str]]:
    said: list[str] = []
    assert config.drive is not None and config.database_url is not None
    return drive_login(config.drive, config.database_url, said.append), said


def test_login_with_the_scripted_approval(
    config: Config, conn: Connection, personal: Personal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    users = personal.emulator.users
    assert users is not None
    users.script(BOB, after_polls=3)  # pending twice, then approved
    code, said = login(personal_config(config, personal.emulator))
    assert code == 0, said
    device = next(iter(users.devices.values()))
    assert "open https://www.google.com/device" in " ".join(said)
    assert f"enter the code {device.user_code}" in " ".join(said)
    assert any(f"signed in as {BOB}" in s for s in said)
    assert device.polls == 3
    row = sign_in_row(conn)
    assert row is not None and row["account_email"] == BOB and row["revoked_at"] is None
    assert row["scope"] == "https://www.googleapis.com/auth/drive.file"
    [refresh] = users.refresh_tokens
    assert refresh not in str(row["refresh_token"])  # Fernet ciphertext, not the token
    text = "\n".join(said) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in personal.secrets():
        assert secret not in text
    assert device.user_code not in "\n".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ({"email": None}, "access was denied"),
        ({"email": BOB, "slow_down_once": True}, "signed in as"),
    ],
)
def test_denied_and_slow_down(
    config: Config, personal: Personal, script: dict[str, object], words: str
) -> None:
    users = personal.emulator.users
    assert users is not None
    users.script(**script)  # type: ignore[arg-type]
    code, said = login(personal_config(config, personal.emulator))
    assert any(words in s for s in said), said
    assert code == (0 if script["email"] else 1)


def test_an_expired_code(config: Config, personal: Personal) -> None:
    users = personal.emulator.users
    assert users is not None
    users.device_lifetime = 0.2  # nobody approves in time
    code, said = login(personal_config(config, personal.emulator))
    assert code == 1 and any("expired" in s for s in said)


def browser(said: list[str]) -> Callable[[str], str]:
    """The user at a browser: opens the consent URL drive-login printed, is sent on to the
    loopback address (which would not load), and pastes that address back."""

    def ask(prompt: str) -> str:
        [url] = [s.strip() for s in said if s.strip().startswith("http") and "/o/oauth2/" in s]
        answer = requests.get(url, allow_redirects=False, timeout=10)
        assert answer.status_code == 302, answer.text
        return str(answer.headers["Location"])

    return ask


def test_the_full_drive_scope_signs_in_through_the_pasted_redirect(
    config: Config, conn: Connection, personal: Personal, caplog: pytest.LogCaptureFixture
) -> None:
    """Google refuses the full drive scope on the device flow, so drive-login uses the
    installed-app flow: consent URL, loopback redirect pasted back, code traded with PKCE."""
    caplog.set_level(logging.DEBUG)
    users = personal.emulator.users
    assert users is not None
    users.script(BOB)
    settings = personal_config(config, personal.emulator, GOOGLE_DRIVE_SCOPE="drive").drive
    assert settings is not None and config.database_url is not None
    said: list[str] = []
    assert drive_login(settings, config.database_url, said.append, ask=browser(said)) == 0, said
    assert not users.devices  # no device code was asked for
    assert any(f"signed in as {BOB} (scope https://www.googleapis.com/auth/drive)" in s for s in said)
    row = sign_in_row(conn)
    assert row is not None and row["scope"] == "https://www.googleapis.com/auth/drive"
    text = "\n".join(said) + "\n".join(r.getMessage() for r in caplog.records)
    for secret in personal.secrets():
        assert secret not in text
    assert "code_verifier" not in text and "4/emu-" not in text  # the code and its verifier


@pytest.mark.parametrize(
    ("paste", "words"),
    [
        (None, "the consent screen answered access_denied"),  # the user clicked Deny
        ("http://127.0.0.1:53682/?state=other&code=4/x", "its state does not match"),
        ("not an address", "its state does not match"),
    ],
)
def test_a_pasted_address_that_does_not_complete_the_sign_in(
    config: Config, conn: Connection, personal: Personal, paste: str | None, words: str
) -> None:
    users = personal.emulator.users
    assert users is not None
    users.script(None)  # Deny
    settings = personal_config(config, personal.emulator, GOOGLE_DRIVE_SCOPE="drive").drive
    assert settings is not None and config.database_url is not None
    said: list[str] = []
    ask = browser(said) if paste is None else (lambda _prompt: paste)
    assert drive_login(settings, config.database_url, said.append, ask=ask) == 1
    assert any(words in s for s in said), said
    assert sign_in_row(conn) is None


def test_the_command_prints_no_secret_at_debug(config: Config, personal: Personal) -> None:
    users = personal.emulator.users
    assert users is not None
    users.script(BOB, after_polls=2)
    result = falback(
        personal_config(config, personal.emulator), "drive-login", env={"FALBACK_LOG_LEVEL": "DEBUG"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"signed in as {BOB}" in result.stdout
    for secret in personal.secrets():
        assert secret not in result.stdout + result.stderr

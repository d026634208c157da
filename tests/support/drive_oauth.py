"""Helpers for the personal-account (OAuth) Drive tests: the emulator with a user
account and the GOOGLE_DRIVE_OAUTH_* variables that point at it."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.fernet import Fernet

from core.config import Config
from db.connection import Connection, fetch_one
from tests.fakes.drive_emulator import DriveEmulator, FileInfo
from tests.support.drive import CHUNK

BOB = "bob@gmail.com"
CLIENT_ID = "4242-falback.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-emulated-client-secret"
TOKEN_KEY = Fernet.generate_key().decode()


@dataclass(frozen=True)
class Personal:
    emulator: DriveEmulator

    def own_tree(self) -> list[FileInfo]:
        return [f for f in self.emulator.files() if f.name == "falback" and f.content_path is None]

    def backups(self) -> list[FileInfo]:
        return [f for f in self.emulator.files() if f.content_path is not None and not f.trashed]

    def path_of(self, info: FileInfo) -> list[str]:
        by_id = {f.id: f for f in self.emulator.files()}
        names: list[str] = []
        parent = info.parents[0] if info.parents else None
        while parent in by_id:
            names.insert(0, by_id[parent].name)
            parent = by_id[parent].parents[0] if by_id[parent].parents else None
        return names

    def secrets(self) -> list[str]:
        """Every token and code the emulator handed out, and the client secret."""
        users = self.emulator.users
        assert users is not None
        return [
            *self.emulator.issued_tokens(),
            *users.refresh_tokens,
            *users.devices,
            CLIENT_SECRET,
            TOKEN_KEY,
        ]


def oauth_env(emulator: DriveEmulator, **overrides: str) -> dict[str, str]:
    env = {
        "GOOGLE_DRIVE_OAUTH_CLIENT_ID": CLIENT_ID,
        "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET": CLIENT_SECRET,
        "FALBACK_TOKEN_KEY": TOKEN_KEY,
        "GOOGLE_DRIVE_CHUNK_SIZE": str(CHUNK),
        "GOOGLE_DRIVE_RETRY_BASE_SECONDS": "0.02",
        "GOOGLE_DRIVE_MAX_RETRIES": "3",
        "GOOGLE_DRIVE_TIMEOUT": "10",
        "GOOGLE_DRIVE_API_BASE_URL": emulator.url,
        "GOOGLE_DRIVE_TOKEN_URI": emulator.token_uri,
        "GOOGLE_DRIVE_DEVICE_CODE_URI": f"{emulator.url}/device/code",
        "GOOGLE_DRIVE_AUTH_URI": f"{emulator.url}/o/oauth2/v2/auth",
    }
    return {**env, **overrides}


def personal_config(config: Config, emulator: DriveEmulator, **overrides: str) -> Config:
    return config.replace(google=oauth_env(emulator, **overrides))


def sign_in_row(conn: Connection) -> dict[str, object] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM drive_oauth WHERE id = 1")
        row = fetch_one(cur)
    conn.commit()
    return row


def sign_in(config: Config, personal: Personal, email: str = BOB) -> list[str]:
    """`drive-login` in this process, approved by `email` on the second poll."""
    from jobs.destinations.drive_login import drive_login

    users = personal.emulator.users
    assert users is not None and config.drive is not None and config.database_url is not None
    users.script(email, after_polls=2)
    said: list[str] = []
    assert drive_login(config.drive, config.database_url, said.append, redis_url=config.redis_url) == 0, said
    return said

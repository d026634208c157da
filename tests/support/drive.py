"""Helpers for the Drive tests (the fixtures, sa_key, drive and drive_config, are in
tests/conftest.py).

Only the base URL and the token URI differ from production; everything else in the
GOOGLE_DRIVE_* variables, and the code they drive, is the production path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from db.connection import Connection, fetch_one
from tests.fakes.drive_emulator import DriveEmulator, FileInfo
from tests.support.rows import ledger_rows

SA_EMAIL = "falback@demo-project.iam.gserviceaccount.com"
ALICE = "alice@example.com"
CHUNK = 1024 * 1024  # tests use 1 MiB chunks so a few MiB cross several chunk boundaries


@dataclass(frozen=True)
class Key:
    private_pem: str
    public_pem: bytes


@dataclass(frozen=True)
class Drive:
    emulator: DriveEmulator
    drive_id: str  # the shared drive
    folder_id: str  # GOOGLE_DRIVE_FOLDER_ID: a folder inside it

    def backups(self, *, trashed: bool = False) -> list[FileInfo]:
        """Files (not folders) under the configured folder, at any depth: the live ones, or
        with `trashed` those in Drive's trash."""
        by_id = {f.id: f for f in self.emulator.files()}

        def under(info: FileInfo) -> bool:
            parent = info.parents[0] if info.parents else None
            while parent and parent in by_id:
                if parent == self.folder_id:
                    return True
                parent = by_id[parent].parents[0] if by_id[parent].parents else None
            return parent == self.folder_id

        return [f for f in by_id.values() if f.content_path is not None and f.trashed == trashed and under(f)]


def make_key() -> Key:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(private, public)


def drive_env(drive: Drive, key: Key, **overrides: str) -> dict[str, str]:
    """The user's note's variables (the key with escaped newlines, as in an env file),
    plus the two test-only base URLs and quick retries."""
    env = {
        "GOOGLE_DRIVE_PROJECT_ID": "demo-project",
        "GOOGLE_DRIVE_PRIVATE_KEY_ID": "k1",
        "GOOGLE_DRIVE_PRIVATE_KEY": key.private_pem.replace("\n", "\\n"),
        "GOOGLE_DRIVE_CLIENT_EMAIL": SA_EMAIL,
        "GOOGLE_DRIVE_CLIENT_ID": "1234567890",
        "GOOGLE_DRIVE_FOLDER_ID": drive.folder_id,
        "GOOGLE_DRIVE_CHUNK_SIZE": str(CHUNK),
        "GOOGLE_DRIVE_RETRY_BASE_SECONDS": "0.02",
        "GOOGLE_DRIVE_MAX_RETRIES": "3",
        "GOOGLE_DRIVE_TIMEOUT": "10",
        "GOOGLE_DRIVE_API_BASE_URL": drive.emulator.url,
        "GOOGLE_DRIVE_TOKEN_URI": drive.emulator.token_uri,
    }
    return {**env, **overrides}


def only_row(conn: Connection) -> dict[str, Any]:
    """The one ledger row, with its Drive upload session (drive_files) when it has one."""
    [row] = ledger_rows(conn)
    with conn.cursor() as cur:
        cur.execute("SELECT session_uri, session_offset FROM drive_files WHERE ledger_id = %s", (row["id"],))
        session = fetch_one(cur)
    conn.commit()
    return {**row, **(session or {"session_uri": None, "session_offset": None})}


def write_key_file(path: Path, key: Key | None = None, **fields: str) -> Path:
    """A JSON key file as Cloud Console downloads it."""
    key = key or make_key()
    info = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "k1",
        "private_key": key.private_pem,
        "client_email": SA_EMAIL,
        "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
        **fields,
    }
    path.write_text(json.dumps(info))
    return path

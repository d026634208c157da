"""The demo's Google Drive, in either of the two ways a user reaches it (docs/google-drive.md):

- `personal` (the default, the user the demo is for): a personal Google account through
  an OAuth client; `falback drive-login` signs it in with the device flow (a stand-in
  user approves on the emulator), `falback drive-check` checks it, and the copies land
  in that account's My Drive under falback/<kind>/<YYYY-MM>/;
- `service-account`: a service account that is a Content manager of a shared drive.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devkit.drive_emulator import DriveEmulator, FileInfo
from devkit.drive_users import UserAccounts

MODES = ("personal", "service-account")
SA_EMAIL = "falback-demo@demo-project.iam.gserviceaccount.com"
PERSONAL_EMAIL = "you@gmail.com"
_FOLDER = "application/vnd.google-apps.folder"


@dataclass
class DemoDrive:
    emulator: DriveEmulator
    env: dict[str, str]  # the GOOGLE_DRIVE_* (and token key) variables, as a user sets them
    where: str  # where the copies go, in words
    owner: str  # the account whose files are the demo's copies
    drive_id: str | None  # the shared drive, or None for a My Drive
    # Run before the processes start (the sign-in); returns an exit code.
    prepare: Callable[[Mapping[str, str], Callable[[str], None]], int]

    def manifest(self) -> list[dict[str, Any]]:
        """Every file (not folder, not trashed: drive-check's probe is) the demo's account
        holds there, with its folder path."""
        items = {f.id: f for f in self.emulator.files()}
        return [
            {
                "id": f.id,
                "name": f.name,
                "path": "/".join([*_folders(f, items), f.name]),
                "size": f.size,
                "md5": f.md5,
                "parents": f.parents,
                "app_properties": f.app_properties,
                "content_path": str(f.content_path),
            }
            for f in items.values()
            if f.content_path is not None
            and not f.trashed
            and f.drive_id == self.drive_id
            and (self.drive_id is not None or f.owner == self.owner)
        ]


def start(mode: str, storage: Path) -> DemoDrive:
    """The emulator (started; the caller stops it) and the settings for `mode`."""
    private_pem, public_pem = service_account_key()
    if mode == "service-account":
        emulator = DriveEmulator(storage, public_pem, service_account_email=SA_EMAIL).start()
        drive_id = emulator.create_shared_drive("falback demo", members={SA_EMAIL: "fileOrganizer"})
        folder_id = emulator.create_folder("fal", drive_id)
        return DemoDrive(
            emulator,
            service_account_env(emulator, folder_id, private_pem),
            'the shared drive "falback demo" of the Drive emulator',
            SA_EMAIL,
            drive_id,
            lambda _env, _say: 0,
        )
    if mode != "personal":
        raise ValueError(f"unknown Drive mode {mode!r}: expected one of {', '.join(MODES)}")
    client_id = f"{secrets.randbelow(10**12):012d}-demo.apps.googleusercontent.com"
    users = UserAccounts(client_id, secrets.token_urlsafe(24), interval=0.2)
    emulator = DriveEmulator(storage, public_pem, users=users).start()
    env = {
        "GOOGLE_DRIVE_OAUTH_CLIENT_ID": users.client_id,
        "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET": users.client_secret,
        "FALBACK_TOKEN_KEY": Fernet.generate_key().decode(),
        # Only where Google's endpoints are differs from a real setup.
        "GOOGLE_DRIVE_API_BASE_URL": emulator.url,
        "GOOGLE_DRIVE_TOKEN_URI": emulator.token_uri,
        "GOOGLE_DRIVE_DEVICE_CODE_URI": f"{emulator.url}/device/code",
    }

    def sign_in(process_env: Mapping[str, str], say: Callable[[str], None]) -> int:
        # The stand-in user approves the sign-in on their phone at falback's second poll.
        users.script(PERSONAL_EMAIL, after_polls=2)
        say(f"falback drive-login (the demo's stand-in user {PERSONAL_EMAIL} approves on the emulator):")
        code = _falback(["drive-login"], process_env, say)
        if code == 0:
            say("falback drive-check:")
            code = _falback(["drive-check"], process_env, say)
        return code

    return DemoDrive(
        emulator,
        env,
        f"the My Drive of {PERSONAL_EMAIL} on the Drive emulator, under falback/<kind>/<YYYY-MM>/",
        PERSONAL_EMAIL,
        None,
        sign_in,
    )


def service_account_key() -> tuple[str, bytes]:
    """A fresh RSA key: the private PEM for GOOGLE_DRIVE_PRIVATE_KEY, the public one for
    the emulator's token endpoint to check the JWT with."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def service_account_env(emulator: DriveEmulator, folder_id: str, private_pem: str) -> dict[str, str]:
    """The GOOGLE_DRIVE_* variables of a service account on a shared drive, as the README
    sets them up; only the API base URL and token URI point at the emulator."""
    return {
        "GOOGLE_DRIVE_PROJECT_ID": "demo-project",
        "GOOGLE_DRIVE_PRIVATE_KEY_ID": "demo-key",
        "GOOGLE_DRIVE_PRIVATE_KEY": private_pem.replace("\n", "\\n"),
        "GOOGLE_DRIVE_CLIENT_EMAIL": SA_EMAIL,
        "GOOGLE_DRIVE_CLIENT_ID": "1234567890",
        "GOOGLE_DRIVE_FOLDER_ID": folder_id,
        "GOOGLE_DRIVE_API_BASE_URL": emulator.url,
        "GOOGLE_DRIVE_TOKEN_URI": emulator.token_uri,
    }


def _falback(args: list[str], env: Mapping[str, str], say: Callable[[str], None]) -> int:
    """Run a falback command as the user would, its output passed on line by line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "falback", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        say("  " + line.rstrip("\n"))
    return process.wait(timeout=60)


def _folders(item: FileInfo, items: dict[str, FileInfo]) -> list[str]:
    path: list[str] = []
    parents = item.parents
    while parents and parents[0] in items and items[parents[0]].mime_type == _FOLDER:
        parent = items[parents[0]]
        path.insert(0, parent.name)
        parents = parent.parents
    return path

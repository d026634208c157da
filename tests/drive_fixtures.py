"""Fixtures for the Drive tests: a service-account key made once per session, the Drive
emulator with a shared drive, and a Config whose GOOGLE_DRIVE_* variables point at it.

Test modules load them with `pytest_plugins = ["tests.drive_fixtures"]` and import
helpers from tests.drive_helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Config
from tests.drive_emulator import DriveEmulator
from tests.drive_helpers import ALICE, SA_EMAIL, Drive, Key, drive_env, make_key


@pytest.fixture(scope="session")
def sa_key() -> Key:
    return make_key()


@pytest.fixture
def drive(tmp_path: Path, sa_key: Key) -> Iterator[Drive]:
    with DriveEmulator(tmp_path / "drive", sa_key.public_pem, service_account_email=SA_EMAIL,
                       allowed_subjects={ALICE}) as emulator:
        # The service account is a Content manager, as docs/google-drive.md asks: it may add
        # and trash files, not delete them.
        drive_id = emulator.create_shared_drive(
            "Backups", members={SA_EMAIL: "fileOrganizer", ALICE: "organizer"})
        yield Drive(emulator, drive_id, emulator.create_folder("fal", drive_id))


@pytest.fixture
def drive_config(config: Config, drive: Drive, sa_key: Key) -> Config:
    return config.replace(google=drive_env(drive, sa_key))

"""`falback drive-check` says in plain words what is wrong with the Drive settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import Config
from jobs.destinations.drive_check import drive_check
from tests.support.drive import ALICE, SA_EMAIL, Drive, Key, drive_env, make_key, write_key_file
from tests.support.processes import falback


def check(config: Config, drive: Drive, key: Key, **env: str) -> tuple[int, str]:
    lines: list[str] = []
    code = drive_check(config.replace(google=drive_env(drive, key, **env)), lines.append)
    output = "\n".join(lines)
    assert key.private_pem[40:90] not in output and "ya29." not in output
    return code, output


def test_a_good_shared_drive_setup(config: Config, drive: Drive, sa_key: Key) -> None:
    code, output = check(config, drive, sa_key, GOOGLE_DRIVE_SHARE_ANYONE="true")
    assert code == 0, output
    assert f"service account  {SA_EMAIL} (key k1, from GOOGLE_DRIVE_PRIVATE_KEY)" in output
    assert "token            ok" in output
    assert f"drive api        ok, as {SA_EMAIL}" in output
    assert f"folder           'fal' ({drive.folder_id}) in a shared drive ({drive.drive_id})" in output
    assert "write probe      created a test file and moved it to the trash: ok" in output
    assert output.endswith("drive-check: ok, backups can go to Drive")
    # A Content manager may trash but not delete in a shared drive: the probe is trashed.
    assert drive.emulator.requests["multipart"] == 1 and drive.emulator.requests["update"] == 1
    assert drive.emulator.requests["delete"] == 0
    assert drive.backups() == [] and len(drive.backups(trashed=True)) == 1


def test_impersonation_into_a_users_my_drive(config: Config, drive: Drive, sa_key: Key) -> None:
    folder = drive.emulator.create_folder("backups", owner=ALICE)
    code, output = check(config, drive, sa_key, GOOGLE_DRIVE_IMPERSONATE=ALICE, GOOGLE_DRIVE_FOLDER_ID=folder)
    assert code == 0, output
    assert f"acting as        {ALICE}" in output
    assert f"'backups' ({folder}) in a My Drive, as {ALICE}" in output
    assert drive.emulator.grants[-1].subject == ALICE


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"GOOGLE_DRIVE_IMPERSONATE": "mallory@example.com"},
            f"Google refused to let {SA_EMAIL} act as mallory@example.com (unauthorized_client: Client is"
            " unauthorized to retrieve access tokens using this method, or client not authorized for any of"
            " the scopes requested.). Set up domain-wide delegation: Admin console > Security > Access and"
            " data control > API controls > Manage domain-wide delegation, add client ID 1234567890 with"
            " scope https://www.googleapis.com/auth/drive",
        ),
        (
            {"GOOGLE_DRIVE_FOLDER_ID": "", "GOOGLE_DRIVE_IMPERSONATE": ""},
            "GOOGLE_DRIVE_FOLDER_ID is not set, so files would go to the service account's own My Drive. A"
            " service account has no storage quota, so Drive refuses its files there. Use a folder in a"
            f" shared drive and add {SA_EMAIL} to it as a Content manager, or set GOOGLE_DRIVE_IMPERSONATE",
        ),
        (
            {"GOOGLE_DRIVE_FOLDER_ID": "1nope"},
            f"the folder 1nope (GOOGLE_DRIVE_FOLDER_ID) was not found, or {SA_EMAIL} cannot see it: add"
            f" {SA_EMAIL} to the shared drive as a Content manager",
        ),
        (
            {"GOOGLE_DRIVE_FOLDER_ID": "1nope", "GOOGLE_DRIVE_IMPERSONATE": ALICE},
            f"the folder 1nope (GOOGLE_DRIVE_FOLDER_ID) was not found, or {ALICE} cannot see it: share it"
            f" with {ALICE} as an Editor (or, if it is in a shared drive, add {ALICE} to that shared drive"
            " as a Content manager)",
        ),
        (
            {"GOOGLE_DRIVE_SCOPE": "drive.readonly"},
            "Drive answered 403 insufficientPermissions to upload a file: Request had insufficient"
            " authentication scopes. The token's scope (https://www.googleapis.com/auth/drive.readonly)"
            " cannot write files: set GOOGLE_DRIVE_SCOPE=drive",
        ),
    ],
)
def test_each_problem_in_plain_words(
    config: Config, drive: Drive, sa_key: Key, env: dict[str, str], problem: str
) -> None:
    code, output = check(config, drive, sa_key, **env)
    assert code == 1
    assert f"PROBLEM          {problem}" in output, output
    assert output.endswith("drive-check: Drive is not usable yet")


def test_a_key_google_does_not_know(config: Config, drive: Drive) -> None:
    code, output = check(config, drive, make_key())
    assert code == 1
    assert (
        f"PROBLEM          Google refused the service account key of {SA_EMAIL} (invalid_grant:"
        " Invalid JWT Signature.). The key may have been deleted or belong to another account"
        " (GOOGLE_DRIVE_PRIVATE_KEY)"
    ) in output


def test_a_folder_the_service_account_cannot_see(config: Config, drive: Drive, sa_key: Key) -> None:
    private = drive.emulator.create_shared_drive("Someone else's", members={"bob@example.com"})
    code, output = check(config, drive, sa_key, GOOGLE_DRIVE_FOLDER_ID=private)
    assert code == 1 and f"the folder {private} (GOOGLE_DRIVE_FOLDER_ID) was not found" in output


def test_a_my_drive_folder_without_impersonation_has_no_quota(
    config: Config, drive: Drive, sa_key: Key
) -> None:
    shared_with_sa = drive.emulator.create_folder("inbox", owner=ALICE, shared_with={SA_EMAIL})
    code, output = check(config, drive, sa_key, GOOGLE_DRIVE_FOLDER_ID=shared_with_sa)
    assert code == 1
    assert (
        "PROBLEM          the folder 'inbox' is in someone's My Drive, not in a shared drive. A"
        " service account has no storage quota"
    ) in output


def test_a_file_is_not_a_folder(config: Config, drive: Drive, sa_key: Key) -> None:
    file_id = drive.emulator.add_file("notes.txt", b"x", drive.folder_id)
    code, output = check(config, drive, sa_key, GOOGLE_DRIVE_FOLDER_ID=file_id)
    assert code == 1 and f"GOOGLE_DRIVE_FOLDER_ID {file_id} is a file ('notes.txt'), not a folder" in output


def test_not_configured(config: Config) -> None:
    lines: list[str] = []
    assert drive_check(config, lines.append) == 1
    assert lines[0].startswith("Google Drive is not configured (no GOOGLE_DRIVE_* variables)")


def test_the_command(config: Config, drive: Drive, sa_key: Key) -> None:
    good = falback(config.replace(google=drive_env(drive, sa_key)), "drive-check")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "drive-check: ok" in good.stdout
    bad = falback(config.replace(database_url=None), "drive-check")
    assert bad.returncode == 1 and "not configured" in bad.stdout
    broken = falback(config, "drive-check", env=drive_env(drive, sa_key, GOOGLE_DRIVE_CHUNK_SIZE="1000"))
    assert broken.returncode == 2
    assert "configuration error: GOOGLE_DRIVE_CHUNK_SIZE must be a multiple of 256 KiB" in broken.stderr


def test_a_json_key_file(config: Config, drive: Drive, sa_key: Key, tmp_path: Path) -> None:
    key_file = write_key_file(tmp_path / "sa.json", sa_key)
    inline = (
        "GOOGLE_DRIVE_PRIVATE_KEY",
        "GOOGLE_DRIVE_CLIENT_EMAIL",
        "GOOGLE_DRIVE_PRIVATE_KEY_ID",
        "GOOGLE_DRIVE_PROJECT_ID",
        "GOOGLE_DRIVE_CLIENT_ID",
    )
    env = {
        k: v
        for k, v in drive_env(drive, sa_key, GOOGLE_DRIVE_KEY_FILE=str(key_file)).items()
        if k not in inline
    }
    lines: list[str] = []
    assert drive_check(config.replace(google=env), lines.append) == 0, lines
    assert f"(key k1, from GOOGLE_DRIVE_KEY_FILE ({key_file}))" in lines[0]


@pytest.mark.parametrize(
    ("role", "problem"),
    [
        (
            "writer",
            "created the probe file 'falback-drive-check-{}.txt' but could not move it to the trash:"
            " Drive answered 403 insufficientFilePermissions to move a file to the trash: The user"
            " does not have sufficient permissions for this file. {} lacks the role for this in"
            " the shared drive: make it a Content manager",
        ),
        (
            "reader",
            "Drive answered 403 insufficientFilePermissions to upload a file: The user does not"
            " have sufficient permissions for this file. {1} lacks the role for this in the shared"
            " drive: make it a Content manager",
        ),
    ],
)
def test_a_role_below_content_manager(
    config: Config, drive: Drive, sa_key: Key, role: str, problem: str
) -> None:
    """A Contributor (writer) can add files but not trash them; a Viewer cannot add any."""
    low = drive.emulator.create_shared_drive("Low", members={SA_EMAIL: role})
    code, output = check(config, drive, sa_key, GOOGLE_DRIVE_FOLDER_ID=low)
    assert code == 1
    stamp = output.split("falback-drive-check-", 1)[1][:16] if role == "writer" else ""
    assert f"PROBLEM          {problem.format(stamp, SA_EMAIL)}" in output, output


def test_a_full_shared_drive_is_not_told_to_use_a_shared_drive(
    config: Config, drive: Drive, sa_key: Key
) -> None:
    drive.emulator.faults.add(
        "storage_quota", on="multipart", message="The user's Drive storage quota has been exceeded."
    )
    code, output = check(config, drive, sa_key)
    assert code == 1
    assert (
        "PROBLEM          Drive answered 403 storageQuotaExceeded to upload a file: The user's"
        " Drive storage quota has been exceeded. The shared drive is full"
    ) in output, output
    assert "no storage quota" not in output and "Use a folder in a shared drive" not in output

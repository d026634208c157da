"""Storage in the personal-account mode: drive-check tells the account, scope, used and
limit and the bytes still to back up (warning when they will not fit); a full Drive
(storageQuotaExceeded) pauses uploads instead of failing file after file."""

from __future__ import annotations

from core.config import Config
from db.connection import Connection
from jobs.destinations.drive_check import drive_check
from tests.fakes.cdn import FakeCdn
from tests.support.drive_oauth import BOB, CLIENT_ID, Personal, personal_config, sign_in
from tests.support.processes import falback
from tests.support.rows import add_video, ledger_rows, query
from tests.support.workers import run_worker


def test_drive_check_tells_the_account_quota_and_backlog(
    config: Config, conn: Connection, cdn: FakeCdn, personal: Personal
) -> None:
    oauth = personal_config(config, personal.emulator)
    lines: list[str] = []
    assert drive_check(oauth, lines.append) == 1
    assert "no Google account is signed in: run `falback drive-login`" in "\n".join(lines)

    sign_in(oauth, personal)
    users = personal.emulator.users
    assert users is not None
    users.quota[BOB] = 400 * 1024  # nearly full
    for n in range(3):
        add_video(conn, cdn, n, size=200_000)
    conn.commit()
    # App files not yet in the ledger count as still to back up, before any backfill.
    lines = []
    assert drive_check(oauth, lines.append) == 0
    assert "to back up       0.6 MiB in 3 file(s)" in "\n".join(lines)
    assert falback(oauth, "backfill", "--type", "all", "--limit", "10").returncode == 0
    lines = []
    code = drive_check(oauth, lines.append)
    output = "\n".join(lines)
    assert code == 0, output
    assert f"mode             personal Google account (OAuth client {CLIENT_ID})" in output
    assert "scope            https://www.googleapis.com/auth/drive.file" in output
    assert f"account          {BOB} (token ok)" in output
    assert "storage          0.0 MiB used of 0.4 MiB" in output
    assert "to back up       0.6 MiB in 3 file(s)" in output
    assert "WARNING          the files still to back up (0.6 MiB) will not fit" in output
    assert "write probe      created a test file and moved it to the trash: ok" in output
    for secret in personal.secrets():
        assert secret not in output
    # `falback status` shows the same storage figures and warning.
    status = falback(oauth, "status")
    assert status.returncode == 0, status.stderr
    assert "drive storage          0.0 MiB used of 0.4 MiB" in status.stdout
    assert "to back up       0.6 MiB in 3 file(s)" in status.stdout
    assert "WARNING          the files still to back up (0.6 MiB) will not fit" in status.stdout
    for secret in personal.secrets():
        assert secret not in status.stdout + status.stderr


def test_a_full_drive_pauses_uploads_with_nothing_failed(
    config: Config, conn: Connection, cdn: FakeCdn, personal: Personal
) -> None:
    oauth = personal_config(config, personal.emulator)
    sign_in(oauth, personal)
    for n in range(3):
        add_video(conn, cdn, n, size=100_000)
    personal.emulator.faults.add(
        "storage_quota",
        on=["multipart", "initiate"],
        message="The user's Drive storage quota has been exceeded.",
    )
    assert falback(oauth, "backfill", "--type", "all", "--limit", "10").returncode == 0
    run_worker(oauth)
    rows = ledger_rows(conn)
    assert {r["status"] for r in rows} <= {"retrying", "queued"}
    assert {r["attempts"] for r in rows} == {0}
    [pause] = query(conn, "SELECT * FROM destination_pauses WHERE destination = 'drive'")
    assert "storage" in pause["reason"] and "is full" in pause["reason"]
    assert personal.emulator.faults.fired == [("storage_quota", "multipart")]  # one try, not three

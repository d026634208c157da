"""Every fault the emulator can inject, through a real worker process: the file ends
backed up exactly once, or in a clear permanent state with a readable reason."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis import Redis
from rq.registry import ScheduledJobRegistry

from core.config import Config
from db.connection import Connection, fetch_all
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.support.drive import ALICE, CHUNK, SA_EMAIL, Drive, Key, drive_env, only_row
from tests.support.rows import add_image, add_video, ledger_rows
from tests.support.workers import run_worker

SIZE = 6 * CHUNK + 123  # above the multipart limit: a resumable upload of 7 chunks


def one_copy(drive: Drive, cdn: FakeCdn, row: dict[str, Any]) -> None:
    assert row["status"] == "done", row["last_error"]
    [copy] = drive.backups()
    assert (copy.id, copy.size, copy.md5) == (row["destination_id"], SIZE, cdn.file(row["source_url"]).md5())


@pytest.mark.parametrize(
    ("kind", "count", "params"),
    [
        ("server_error", 2, {"status": 503}),
        ("server_error", 1, {"status": 500}),
        ("too_many_requests", 1, {"retry_after": 1}),
        ("user_rate_limit", 2, {}),
        ("rate_limit", 1, {}),
        ("drop_connection", 2, {}),
        ("short_confirm", 3, {}),
    ],
)
def test_chunk_faults_are_ridden_out_inside_the_upload(
    drive_config: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    drive: Drive,
    kind: str,
    count: int,
    params: dict[str, Any],
) -> None:
    add_video(conn, cdn, 1, size=SIZE)
    backfill(drive_config, conn, redis, "all", 10)
    drive.emulator.faults.add(kind, count, **params)
    started = time.monotonic()
    run_worker(drive_config)
    row = only_row(conn)
    one_copy(drive, cdn, row)
    assert row["attempts"] == 1  # no job retry was needed
    assert drive.emulator.faults.fired == [(kind, "chunk")] * count
    assert len(drive.emulator.sessions()) == 1
    if kind == "too_many_requests":
        assert time.monotonic() - started > 1.0  # Retry-After was honoured
    if kind in ("drop_connection", "server_error"):
        assert drive.emulator.requests["status"] >= count  # asked Drive where it stood


@pytest.mark.parametrize("on", ["initiate", "create", "list", "generate_ids", "any"])
def test_faults_on_other_requests_are_retried(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, on: str
) -> None:
    add_video(conn, cdn, 1, size=SIZE)
    backfill(drive_config, conn, redis, "all", 10)
    drive.emulator.faults.add("server_error", 1, on=on, status=502)
    drive.emulator.faults.add("auth_error", 1, on=on)  # the token is refreshed
    run_worker(drive_config)
    row = only_row(conn)
    one_copy(drive, cdn, row)
    assert row["attempts"] == 1 and len(drive.emulator.faults.fired) == 2


def test_an_expired_session_starts_over_on_the_next_attempt(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    add_video(conn, cdn, 1, size=SIZE)
    backfill(drive_config, conn, redis, "all", 10)
    drive.emulator.faults.add("session_expired")
    run_worker(drive_config)
    row = only_row(conn)
    assert row["status"] == "retrying"
    assert "the next attempt starts a new upload session" in row["last_error"]
    assert row["session_uri"] is None
    wait_and_work(drive_config, conn)
    row = only_row(conn)
    one_copy(drive, cdn, row)
    assert row["attempts"] == 2 and len(drive.emulator.sessions()) == 2


def wait_and_work(config: Config, conn: Connection, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while ledger_rows(conn)[0]["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        run_worker(config)


def test_a_server_that_keeps_failing_leaves_a_readable_retry(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    add_video(conn, cdn, 1, size=SIZE)
    backfill(drive_config, conn, redis, "all", 10)
    drive.emulator.faults.add("server_error", 100, status=503)
    run_worker(drive_config)
    row = only_row(conn)
    assert row["status"] == "retrying" and row["attempts"] == 1
    assert row["last_error"] == "Drive answered 503 backendError to send a chunk: Backend Error"
    assert row["session_uri"] is not None  # kept: the next attempt resumes it
    assert len(drive.emulator.faults.fired) == 1 + 3  # the PUT, then 3 backed-off retries


def test_an_odd_acknowledgement_shifts_the_chunks(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    """A 308 whose Range ends off a 256 KiB boundary: the next chunks start there and are
    still whole multiples of 256 KiB, which Drive takes (a shorter one gets 400)."""
    add_video(conn, cdn, 1, size=SIZE)
    backfill(drive_config, conn, redis, "all", 10)
    drive.emulator.faults.add("short_confirm", 1, keep_bytes=100_000)
    run_worker(drive_config)
    row = only_row(conn)
    one_copy(drive, cdn, row)
    assert row["attempts"] == 1 and len(drive.emulator.sessions()) == 1
    chunks = [e.status for e in drive.emulator.log if e.type == "chunk"]
    # The short one, 5 whole chunks from byte 100000 on, then the rest: no 400, no new session.
    assert chunks == [308] * 6 + [200]


QUOTA_FULL = "The user's Drive storage quota has been exceeded."


@pytest.mark.parametrize("mode", ["shared drive", "impersonated", "service account's My Drive"])
def test_storage_quota_is_permanent_with_advice_for_the_mode(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, sa_key: Key, mode: str
) -> None:
    """403 storageQuotaExceeded means a full shared drive, a full user's My Drive, or a
    service account with no quota of its own; each gets its own advice."""
    env = {}
    if mode == "impersonated":
        env = {
            "GOOGLE_DRIVE_IMPERSONATE": ALICE,
            "GOOGLE_DRIVE_FOLDER_ID": drive.emulator.create_folder("backups", owner=ALICE),
        }
    elif mode == "service account's My Drive":  # Drive refuses the first folder falback makes
        env = {
            "GOOGLE_DRIVE_FOLDER_ID": drive.emulator.create_folder(
                "inbox", owner=ALICE, shared_with={SA_EMAIL}
            )
        }
    settings = config.replace(google=drive_env(drive, sa_key, **env))
    video_id = add_video(conn, cdn, 1, size=SIZE)
    add_image(conn, cdn, 2, size=1000)
    backfill(settings, conn, redis, "all", 10)
    if mode != "service account's My Drive":
        drive.emulator.faults.add("storage_quota", 1, message=QUOTA_FULL)
        drive.emulator.faults.add("storage_quota", 1, on="multipart", message=QUOTA_FULL)
    run_worker(settings)
    advice = {
        "shared drive": f"Drive answered 403 storageQuotaExceeded to {{doing}}: {QUOTA_FULL[:-1]}. The"
        " shared drive is full: the organisation's Workspace storage, or a storage"
        " limit an admin set on this shared drive, is used up.",
        "impersonated": f"Drive answered 403 storageQuotaExceeded to {{doing}}: {QUOTA_FULL[:-1]}. The"
        f" storage of {ALICE} is full: free space or buy more, or back up into a"
        " shared drive",
        "service account's My Drive": "Drive refused the upload: a service account has no storage"
        " quota (Service Accounts do not have storage quota.",
    }[mode]
    video, image = ledger_rows(conn)
    for row, doing in ((video, "start an upload"), (image, "upload a file")):
        assert row["status"] == "failed" and row["attempts"] == 1
        assert row["last_error"].startswith(advice.format(doing=doing)), row["last_error"]
        if mode != "service account's My Drive":
            assert "no storage quota" not in row["last_error"]
            assert "GOOGLE_DRIVE_FOLDER_ID in a shared drive" not in row["last_error"]
    assert drive.backups() == []
    with conn.cursor() as cur:
        cur.execute("SELECT backup_status, backup_error FROM gen_videos WHERE id = %s", (video_id,))
        [app] = fetch_all(cur)
    conn.commit()
    assert app["backup_status"] == "failed" and app["backup_error"].endswith(video["last_error"])


def test_the_daily_upload_cap_pauses_drive_without_spending_attempts(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, sa_key: Key
) -> None:
    paused = config.replace(google=drive_env(drive, sa_key, GOOGLE_DRIVE_UPLOAD_CAP_PAUSE="3"))
    add_video(conn, cdn, 1, size=SIZE, upscale_size=SIZE)
    backfill(paused, conn, redis, "all", 10)
    drive.emulator.faults.add("upload_limit", 1)  # the 750 GB/day answer, on the first upload
    run_worker(paused)
    upscale, regular = ledger_rows(conn)
    assert upscale["status"] == "retrying" and upscale["attempts"] == 0
    assert upscale["last_error"].startswith("Drive's daily upload cap (750 GB per day) was reached")
    assert regular["status"] == "queued" and regular["attempts"] == 0  # never claimed
    with conn.cursor() as cur:
        cur.execute("SELECT destination, reason FROM destination_pauses")
        [pause] = fetch_all(cur)
    conn.commit()
    assert pause["destination"] == "drive"
    scheduled = {
        q: ScheduledJobRegistry(q, connection=redis).get_job_ids()  # type: ignore[no-untyped-call]
        for q in ("backup-upscale", "backup-regular")
    }
    assert scheduled == {"backup-upscale": ["backup-1"], "backup-regular": ["backup-2"]}
    assert drive.emulator.requests["initiate"] == 1 and drive.backups() == []
    time.sleep(3)  # the pause runs out; the rescheduled jobs come due
    run_worker(paused)
    rows = ledger_rows(conn)
    assert [(r["status"], r["attempts"], r["last_error"]) for r in rows] == [("done", 1, None)] * 2
    assert len(drive.backups()) == 2

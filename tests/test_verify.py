"""`falback verify` against real destinations (a local folder, the Drive emulator, moto's
S3): a copy changed behind falback's back and one deleted are both reported, removed,
re-queued and copied again; and the schedule that runs it weekly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from core.config import Config, ConfigError
from db.connection import Connection
from jobs.backfill import backfill
from jobs.queues import VERIFY_QUEUE
from jobs.schedule import build_scheduler
from jobs.verify import scheduled_verify
from jobs.worker import WorkerContext
from tests.fakes.cdn import FakeCdn
from tests.support.drive import Drive
from tests.support.processes import falback
from tests.support.rows import add_image, add_video, file_md5, ledger_rows, query
from tests.support.s3 import Bucket
from tests.support.workers import run_worker

WIDE = {"COLUMNS": "250"}  # rich's tables wrap to the terminal's width; keep rows whole


def back_up(config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, images: int = 3) -> list[Any]:
    """`images` images and one upscaled video (two files), backed up; the ledger rows."""
    for n in range(images):
        add_image(conn, cdn, n, size=20_000 + n)
    add_video(conn, cdn, 1, size=30_000, upscale_size=50_000)
    backfill(config, conn, redis, "all", 100)
    run_worker(config)
    rows = ledger_rows(conn)
    assert {r["status"] for r in rows} == {"done"}, [r["last_error"] for r in rows]
    return rows


def copies(conn: Connection) -> dict[int, Any]:
    return {r["ledger_id"]: r for r in query(conn, "SELECT * FROM copies ORDER BY ledger_id")}


def verify(config: Config, *args: str) -> tuple[int, str]:
    result = falback(config, "verify", *args, env=WIDE)
    return result.returncode, result.stdout + result.stderr


def assert_reported(output: str, ledger_id: int, outcome: str) -> None:
    assert any(
        line.split("│")[1:4] and str(ledger_id) == line.split("│")[1].strip() and outcome in line
        for line in output.splitlines()
        if "│" in line
    ), output


def assert_recopied(config: Config, conn: Connection, cdn: FakeCdn, damaged: list[int]) -> None:
    """Re-queued rows are copied again by the worker, and a second verify is clean."""
    assert {r["id"]: r["status"] for r in ledger_rows(conn) if r["id"] in damaged} == dict.fromkeys(
        damaged, "queued"
    )
    assert not set(damaged) & set(copies(conn))
    run_worker(config)
    rows = {r["id"]: r for r in ledger_rows(conn)}
    held = copies(conn)
    for ledger_id in damaged:
        assert rows[ledger_id]["status"] == "done", rows[ledger_id]["last_error"]
        assert held[ledger_id]["md5"] == cdn.file(rows[ledger_id]["source_url"]).md5()
    code, output = verify(config)
    assert code == 0, output
    assert "copies not whole" not in output
    assert all(c["verified_at"] is not None for c in copies(conn).values())


def test_verify_finds_a_changed_and_a_deleted_local_copy_and_copies_them_again(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    rows = back_up(config, conn, cdn, redis)
    held = copies(conn)
    changed, deleted = rows[0]["id"], rows[1]["id"]
    path = config.backup_dir / held[changed]["location"]
    path.write_bytes(b"x" * path.stat().st_size)  # same size, other bytes: only the MD5 tells
    (config.backup_dir / held[deleted]["location"]).unlink()

    code, output = verify(config)

    assert code == 1, output
    assert "local" in output and "5" in output
    assert_reported(output, changed, "wrong")
    assert_reported(output, deleted, "missing")
    assert f"re-queued 2 file(s): ledger {changed}, {deleted}" in output
    assert not path.exists()  # the bad copy is gone: the backup's find() cannot take it
    untouched = [c for i, c in copies(conn).items() if i not in (changed, deleted)]
    assert len(untouched) == 3 and all(c["verified_at"] is not None for c in untouched)
    assert_recopied(config, conn, cdn, [changed, deleted])
    assert file_md5(path) == held[changed]["md5"]


def test_verify_sample_checks_only_n_copies(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    back_up(config, conn, cdn, redis)
    code, output = verify(config, "--sample", "2", "--destination", "local")
    assert code == 0, output
    assert [c for c in copies(conn).values() if c["verified_at"] is not None].__len__() == 2
    code, output = verify(config, "--destination", "drive")
    assert code == 2 and "drive destination is not configured" in output


def test_verify_with_drive_trashes_a_changed_copy_and_recopies_a_deleted_one(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    rows = back_up(drive_config, conn, cdn, redis, images=2)
    held = copies(conn)
    changed, deleted, trashed = rows[0]["id"], rows[1]["id"], rows[2]["id"]
    drive.emulator.replace_content(held[changed]["location"], b"damaged")
    drive.emulator.remove(held[deleted]["location"])
    drive.emulator.trash(held[trashed]["location"])  # someone threw it away: as good as gone

    code, output = verify(drive_config)

    assert code == 1, output
    assert_reported(output, changed, "wrong")
    assert_reported(output, deleted, "missing")
    assert_reported(output, trashed, "missing")
    assert drive.emulator.file(held[changed]["location"]).trashed
    assert_recopied(drive_config, conn, cdn, [changed, deleted, trashed])
    new = copies(conn)
    assert new[changed]["location"] != held[changed]["location"]
    assert new[trashed]["location"] != held[trashed]["location"]
    live = {f.id for f in drive.backups()}
    assert len(live) == len(rows) and {c["location"] for c in new.values()} == live


def test_verify_with_s3_replaces_a_changed_object_and_a_deleted_one(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    rows = back_up(s3_config, conn, cdn, redis, images=2)
    held = copies(conn)
    changed, deleted = rows[0]["id"], rows[1]["id"]
    size = held[changed]["size_bytes"]
    # Another object at the key, of the same size and even the same md5 metadata: only
    # reading the bytes shows it is not the copy.
    s3.put(held[changed]["location"], b"y" * size, md5=held[changed]["md5"], size=str(size))
    s3.admin.delete_object(Bucket=s3.name, Key=held[deleted]["location"])

    code, output = verify(s3_config)

    assert code == 1, output
    assert_reported(output, changed, "wrong")
    assert_reported(output, deleted, "missing")
    assert held[changed]["location"] not in s3.objects()
    assert_recopied(s3_config, conn, cdn, [changed, deleted])
    for c in copies(conn).values():
        assert s3.md5(c["location"]) == c["md5"]


def test_a_destination_that_is_not_the_one_copied_to_is_reported_and_nothing_requeued(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    """Another bucket, or the backup folder not mounted, would make every copy look
    missing: a configuration error, not a reason to forget and re-copy everything."""
    back_up(s3_config, conn, cdn, redis, images=1)
    broken = s3_config.replace(s3_env={**s3_config.s3_env, "FALBACK_S3_BUCKET": "no-such-bucket"})
    code, output = verify(broken)
    assert code == 1 and "S3 has no bucket no-such-bucket" in output, output
    assert len(copies(conn)) == 3 and {r["status"] for r in ledger_rows(conn)} == {"done"}

    # The copies went to fal-backups; a configured bucket that exists but is another one.
    s3.admin.create_bucket(Bucket="other")
    other = s3_config.replace(s3_env={**s3_config.s3_env, "FALBACK_S3_BUCKET": "other"})
    code, output = verify(other)
    assert code == 1 and "the copy is in bucket fal-backups" in output, output
    assert len(copies(conn)) == 3 and {r["status"] for r in ledger_rows(conn)} == {"done"}

    unmounted = s3_config.replace(s3_env={})  # the local folder holds no copies: not checked
    code, output = verify(unmounted)
    assert code == 0 and "copies at s3 not checked" in output, output
    code, output = verify(unmounted, "--destination", "local")
    assert code == 1 and "does not exist (not mounted?)" in output, output
    assert len(copies(conn)) == 3


def test_the_cron_schedule_runs_verify_weekly_unless_turned_off(redis: Redis) -> None:
    jobs = {job.name: job for job in build_scheduler(Config.from_env({}), redis).get_jobs()}
    weekly = jobs["falback-verify"]
    assert (weekly.func_name, weekly.queue_name, weekly.cron) == (
        "jobs.verify.scheduled_verify",
        VERIFY_QUEUE,
        "0 4 * * 0",
    )
    daily = Config.from_env({"FALBACK_VERIFY_SCHEDULE": "30 1 * * *"})
    crons = {j.name: j.cron for j in build_scheduler(daily, redis).get_jobs()}
    assert crons["falback-verify"] == "30 1 * * *"
    off = Config.from_env({"FALBACK_VERIFY_SCHEDULE": "off"})
    assert "falback-verify" not in {j.name for j in build_scheduler(off, redis).get_jobs()}
    assert Config.from_env({"FALBACK_VERIFY_SCHEDULE": "off"}).as_env()["FALBACK_VERIFY_SCHEDULE"] == "off"
    for bad in ("weekly", "0 4 * *", "99 4 * * 0"):
        with pytest.raises(ConfigError, match="FALBACK_VERIFY_SCHEDULE"):
            Config.from_env({"FALBACK_VERIFY_SCHEDULE": bad})


def test_the_scheduled_verify_job_checks_and_requeues(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    rows = back_up(config, conn, cdn, redis, images=1)
    (config.backup_dir / copies(conn)[rows[0]["id"]]["location"]).unlink()
    context = WorkerContext(config, redis)
    try:
        result = scheduled_verify(context)
    finally:
        context.close()
    assert result["tallies"]["local"] == {"checked": 3, "ok": 2, "missing": 1, "wrong": 0, "errors": 0}
    assert result["requeued"] == [rows[0]["id"]]
    run_worker(config)
    assert Path(config.backup_dir / copies(conn)[rows[0]["id"]]["location"]).is_file()

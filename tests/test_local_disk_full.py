"""The local folder on a disk that fills up: uploads pause (no attempt spent, no partial
file left), and the files are copied once there is room. Needs a tiny tmpfs, so root."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from core.config import Config
from db.connection import Connection, fetch_all
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_video, ledger_rows
from tests.support.workers import run_worker

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_pauses_the_folder_and_the_file_is_copied_once_there_is_room(
    config: Config,
    conn: Connection,
    redis: Redis,
    cdn: FakeCdn,
    small_disk: Path,
) -> None:
    on_disk = config.replace(backup_dir=small_disk, disk_full_pause_seconds=1)
    add_video(conn, cdn, 1, size=3 * MiB)
    backfill(on_disk, conn, redis, "regular", 10)
    run_worker(on_disk, with_scheduler=False)

    [row] = ledger_rows(conn)
    assert row["status"] == "retrying" and row["attempts"] == 0, row
    assert "is full" in row["last_error"]
    # The pause was recorded (1 s: on a busy machine it may be over already).
    with conn.cursor() as cur:
        cur.execute("SELECT reason FROM destination_pauses WHERE destination = 'local'")
        [pause] = fetch_all(cur)
    assert "is full" in pause["reason"]
    assert [p for p in small_disk.rglob("*") if p.is_file()] == []  # the partial file is gone
    conn.commit()

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)  # room made
    time.sleep(1.5)  # the pause is over: the scheduler enqueues the job's retry
    run_worker(on_disk)
    conn.rollback()
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["size_bytes"] == 3 * MiB, row

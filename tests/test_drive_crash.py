"""A real worker process: killed with SIGKILL mid-upload and restarted, and streaming a
1 GiB file with its memory measured."""

from __future__ import annotations

import pytest
from redis import Redis
from rq.job import Job

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from jobs.queues import enqueue_one, job_id
from tests.fakes.cdn import FakeCdn
from tests.support.drive import Drive, Key, drive_env, only_row
from tests.support.rows import add_video, ledger_rows
from tests.support.wait import wait_for
from tests.support.workers import (
    kill_worker,
    run_worker,
    worker_peak,
    worker_process,
)

MiB = 1024 * 1024


def restart_after_lease(config: Config, conn: Connection, redis: Redis, row_id: int) -> None:
    """What the sweep does for a dead worker's row once its lease runs out."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE ledger SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (row_id,)
        )
    conn.commit()
    redis.delete(Job.key_for(job_id(row_id)))
    assert enqueue_one(redis, config, row_id, "upscale")


@pytest.mark.parametrize("session_survives", [True, False])
def test_killed_mid_upload_resumes_the_same_session(
    config: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    drive: Drive,
    sa_key: Key,
    session_survives: bool,
) -> None:
    chunk = 4 * MiB
    size = 48 * MiB + 12345
    four_mib = config.replace(google=drive_env(drive, sa_key, GOOGLE_DRIVE_CHUNK_SIZE="4MiB"))
    add_video(conn, cdn, 1, size=1000, upscale_size=size, slow_delay=0.004)
    backfill(four_mib, conn, redis, "upscale", 10)
    worker = worker_process(four_mib)
    emulator = drive.emulator
    wait_for(
        lambda: emulator.sessions() and emulator.sessions()[0].committed >= 4 * chunk,
        30,
        "four chunks in Drive",
    )
    kill_worker(worker.pid)
    worker.wait()
    killed = only_row(conn)
    [session] = emulator.sessions()
    assert killed["status"] == "copying" and killed["session_uri"] == session.uri
    assert session.committed - chunk <= killed["session_offset"] <= session.committed < size
    assert drive.backups() == []
    if not session_survives:
        emulator.expire_session(session.uri)

    source = cdn.file(killed["source_url"])
    source.slow_delay = 0
    restart_after_lease(four_mib, conn, redis, killed["id"])
    run_worker(four_mib)

    row = only_row(conn)
    assert row["status"] == "done" and row["attempts"] == 2 and row["last_error"] is None
    [copy] = drive.backups()
    assert (copy.id, copy.size, copy.md5) == (row["destination_id"], size, source.md5())
    assert row["md5"] == source.md5()
    sessions = emulator.sessions()
    if session_survives:
        [resumed] = sessions
        assert resumed.id == session.id and resumed.file_id == copy.id
        assert resumed.bytes_received - size < 2 * chunk  # re-sent: less than two chunks
        assert emulator.requests["status"] >= 1  # asked Drive for the confirmed offset
    else:
        assert len(sessions) == 2 and sessions[1].file_id == copy.id  # started over
    # The source is read from byte 0 again: the prefix only to hash it.
    assert source.requests == ["", ""]


@pytest.mark.slow
def test_a_1_gib_file_streams_in_flat_memory(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, sa_key: Key
) -> None:
    """The worker runs its jobs in process: its peak RSS for 1 GiB stays under 150 MiB, and
    exceeds that of a worker that copied a 2 MiB file by about two chunks (16 MiB each:
    the one being uploaded and the one read ahead of it, jobs/transfer.py): memory does
    not grow with the file."""
    chunk, bound = 16 * MiB, 150 * MiB
    big_config = config.replace(
        google=drive_env(drive, sa_key, GOOGLE_DRIVE_CHUNK_SIZE="16MiB"), job_timeout_seconds=600
    )
    add_video(conn, cdn, 1, size=2 * MiB, upscale_size=1024 * MiB)
    backfill(big_config, conn, redis, "regular", 10)
    small, _, output = worker_peak(big_config)
    backfill(big_config, conn, redis, "upscale", 10)
    big, elapsed, output = worker_peak(big_config)
    small_row, big_row = ledger_rows(conn)  # the 2 MiB file was backfilled first
    assert big_row["kind"] == "upscale" and big_row["status"] == small_row["status"] == "done", output[-3000:]
    print(
        f"\n1 GiB in {elapsed:.1f} s ({1024 / elapsed:.0f} MiB/s); worker peak RSS:"
        f" 1 GiB {big / MiB:.1f} MiB, 2 MiB {small / MiB:.1f} MiB"
    )
    assert big < bound
    assert big - small < 2 * chunk + 8 * MiB
    copy = drive.emulator.file(big_row["destination_id"])
    assert copy.size == 1024 * MiB and copy.md5 == big_row["md5"] == cdn.file(big_row["source_url"]).md5()

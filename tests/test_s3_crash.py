"""A real worker process against the S3 server: killed with SIGKILL mid-multipart and
restarted (no part is sent twice, one object), and streaming a 256 MiB file with its
memory measured."""

from __future__ import annotations

from redis import Redis
from rq.job import Job

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from jobs.queues import enqueue_one, job_id
from tests.fakes.cdn import FakeCdn
from tests.fakes.s3_server import Fault
from tests.support.rows import add_video, ledger_rows
from tests.support.s3 import PART, Bucket, assert_one_verified_object, s3_env, s3_row
from tests.support.wait import wait_for
from tests.support.workers import kill_worker, run_worker, worker_peak, worker_process

MiB = 1024 * 1024


def test_killed_mid_multipart_resumes_without_sending_a_part_twice(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    size = 12 * PART + 1234  # 13 parts
    add_video(conn, cdn, 1, size=size)
    backfill(s3_config, conn, redis, "all", 10)
    # Part 5 never reaches the server: the worker is killed while it waits for the answer.
    held = s3.proxy.add(Fault("UploadPart", "hold", part=5))
    worker = worker_process(s3_config)
    try:
        wait_for(lambda: held.hits == 1, 60, "part 5 on its way")
        assert s3.proxy.parts_stored() == [1, 2, 3, 4]
        kill_worker(worker.pid)
        worker.wait(10)
    finally:
        held.released.set()
        if worker.poll() is None:
            worker.kill()
    killed = s3_row(conn)
    assert killed["status"] == "copying" and killed["upload_id"] and killed["sent_size"] is None
    assert s3.objects() == {} and len(s3.uploads()) == 1

    # What the sweep does for a dead worker's row once its lease runs out.
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET lease_expires_at = now() - interval '1 second'")
    conn.commit()
    redis.delete(Job.key_for(job_id(killed["id"])))
    assert enqueue_one(redis, s3_config, killed["id"], "regular")
    run_worker(s3_config)

    row = s3_row(conn)
    assert_one_verified_object(s3, cdn, row)
    assert row["attempts"] == 2 and row["last_error"] is None
    assert s3.proxy.parts_stored() == list(range(1, 14))  # each part stored exactly once
    ops = s3.proxy.ops()
    assert (ops["CreateMultipartUpload"], ops["ListParts"], ops["CompleteMultipartUpload"]) == (1, 1, 1)
    assert "AbortMultipartUpload" not in ops


def test_a_256_mib_file_streams_in_flat_memory(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket
) -> None:
    """The worker runs its jobs in process: its peak RSS for 256 MiB stays far under the
    file's size, and exceeds that of a worker that copied a 2 MiB file by about two parts
    (the one uploading and the one read ahead): memory does not grow with the file."""
    part = 8 * MiB
    big_config = config.replace(s3_env=s3_env(s3, FALBACK_S3_PART_SIZE="8MiB"), job_timeout_seconds=600)
    add_video(conn, cdn, 1, size=2 * MiB, upscale_size=256 * MiB + 1)
    backfill(big_config, conn, redis, "regular", 10)
    small, _, output = worker_peak(big_config)
    backfill(big_config, conn, redis, "upscale", 10)
    big, elapsed, output = worker_peak(big_config)
    small_row, big_row = ledger_rows(conn)  # the 2 MiB file was backfilled first
    assert big_row["kind"] == "upscale" and big_row["status"] == small_row["status"] == "done", output[-3000:]
    print(
        f"\n256 MiB in {elapsed:.1f} s; worker peak RSS: 256 MiB {big / MiB:.1f} MiB,"
        f" 2 MiB {small / MiB:.1f} MiB"
    )
    assert big < 160 * MiB
    assert big - small < 2 * part + 8 * MiB
    assert s3.md5(big_row["destination_id"]) == big_row["md5"] == cdn.file(big_row["source_url"]).md5()

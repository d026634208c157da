"""FALBACK_DESTINATIONS=drive,s3: a file is done once both hold a verified copy; each copy
is tracked on its own (copies table), so a failure or a pause at one destination never
redoes, nor holds up, the other. Real servers: the Drive emulator, moto's S3 through the
counting proxy, the fake CDN."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis
from rq import Retry

from core.config import Config
from db import copies, drive_state
from db.connection import Connection
from falback.status import print_status
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.fakes.s3_server import Fault
from tests.support.drive import Drive
from tests.support.rows import add_video, ledger_rows, query
from tests.support.s3 import Bucket, run_job
from tests.support.web import admin_headers, create_app_for
from tests.support.workers import run_worker

SIZE = 300_000


@pytest.fixture
def both(drive_s3_config: Config) -> Config:
    return drive_s3_config


def drive_uploads(drive: Drive) -> int:
    return sum(drive.emulator.requests[t] for t in ("initiate", "multipart", "simple"))


def app_row(conn: Connection, video_id: int) -> dict[str, Any]:
    [row] = query(
        conn,
        "SELECT backup_status, backup_drive_url, backup_storage_url FROM gen_videos WHERE id = %s",
        video_id,
    )
    return dict(row)


def held(conn: Connection, ledger_id: int) -> dict[str, str]:
    found = {c.destination: c.md5 for c in copies.of_file(conn, ledger_id)}
    conn.commit()
    return found


def due_now(conn: Connection) -> None:
    """The retry's backoff is over."""
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET next_attempt_at = now()")
    conn.commit()


def one_video(both: Config, conn: Connection, cdn: FakeCdn, redis: Redis) -> int:
    video_id = add_video(conn, cdn, 1, size=SIZE)
    backfill(both, conn, redis, "all", 10)
    return video_id


def test_both_destinations_get_a_copy_and_the_figures_show_each(
    both: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    drive: Drive,
    s3: Bucket,
    capsys: pytest.CaptureFixture[str],
) -> None:
    video_id = one_video(both, conn, cdn, redis)
    run_worker(both)
    [row] = ledger_rows(conn)
    source = cdn.file(row["source_url"])
    assert row["status"] == "done", row["last_error"]
    # The ledger keeps the first preference's copy.
    assert row["destination"] == "drive" and row["md5"] == source.md5()
    assert held(conn, row["id"]) == {"drive": source.md5(), "s3": source.md5()}
    [in_drive] = drive.backups()
    assert in_drive.id == row["destination_id"]
    [key] = s3.objects()
    assert s3.md5(key) == source.md5()
    app = app_row(conn, video_id)
    assert app["backup_status"] == "completed"
    assert app["backup_drive_url"] and "drive" in app["backup_drive_url"]
    assert app["backup_storage_url"] == f"s3://{s3.name}/{key}"

    client = create_app_for(both).test_client()
    status = client.get("/api/status", headers=admin_headers()).json
    assert status is not None
    assert status["destinations"] == {
        "drive": {"files": 1, "bytes": SIZE},
        "s3": {"files": 1, "bytes": SIZE},
    }
    metrics = client.get("/metrics", headers=admin_headers()).text
    assert 'falback_copies{destination="drive"} 1.0' in metrics
    assert 'falback_copies{destination="s3"} 1.0' in metrics
    assert f'falback_bytes_copied{{destination="s3"}} {float(SIZE)}' in metrics
    page = client.get("/status", headers=admin_headers()).text
    assert "<td>s3</td>" in page and "<td>drive</td>" in page
    assert print_status(both) == 0
    out = capsys.readouterr().out
    assert [line.split()[:2] for line in out.splitlines() if line.startswith(("drive ", "s3 "))] == [
        ["drive", "1"],
        ["s3", "1"],
    ]


def test_a_failing_destination_is_retried_without_redoing_the_other(
    both: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, s3: Bucket
) -> None:
    video_id = one_video(both, conn, cdn, redis)
    # Every try of the attempt (FALBACK_S3_MAX_ATTEMPTS=2) answers 503.
    s3.proxy.add(Fault("PutObject", "status", times=2, status=503, code="ServiceUnavailable"))
    [row] = ledger_rows(conn)
    assert isinstance(run_job(both, row["id"]), Retry)
    [row] = ledger_rows(conn)
    assert row["status"] == "retrying" and row["attempts"] == 1
    assert row["last_error"].startswith("s3: S3 answered 503 ServiceUnavailable")
    assert row["destination"] is None  # not done: S3 has no copy
    assert set(held(conn, row["id"])) == {"drive"}
    assert drive_uploads(drive) == 1 and s3.objects() == {}
    assert app_row(conn, video_id)["backup_status"] == "in_progress"

    # S3 answers again: the next attempt copies to S3 only.
    due_now(conn)
    assert run_job(both, row["id"]) == "done"
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["destination"] == "drive" and row["last_error"] is None
    assert set(held(conn, row["id"])) == {"drive", "s3"}
    assert drive_uploads(drive) == 1 and len(drive.backups()) == 1  # Drive not sent it again
    assert s3.proxy.ops()["PutObject"] == 1 and len(s3.objects()) == 1
    app = app_row(conn, video_id)
    assert app["backup_status"] == "completed"
    assert app["backup_drive_url"] and app["backup_storage_url"]


def test_a_paused_drive_does_not_hold_up_the_s3_copy(
    both: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, s3: Bucket
) -> None:
    one_video(both, conn, cdn, redis)
    drive.emulator.faults.add("upload_limit", 1, on=["multipart", "initiate"])  # 750 GB/day
    [row] = ledger_rows(conn)
    assert isinstance(run_job(both, row["id"]), Retry)
    [row] = ledger_rows(conn)
    # Waiting, not failing: no attempt spent, the reason on the row.
    assert row["status"] == "retrying" and row["attempts"] == 0
    assert row["last_error"].startswith("drive: Drive's daily upload cap")
    assert set(held(conn, row["id"])) == {"s3"} and len(s3.objects()) == 1
    assert drive.backups() == []
    [pause] = query(conn, "SELECT destination FROM destination_pauses")
    assert pause["destination"] == "drive"

    # While Drive stays paused, the job does not even claim the row.
    due_now(conn)
    assert isinstance(run_job(both, row["id"]), Retry)
    assert ledger_rows(conn)[0]["attempts"] == 0 and drive_uploads(drive) == 1

    # The pause ends: Drive gets its copy, S3 is not sent the file again.
    drive_state.resume(conn, "drive")
    conn.commit()
    assert run_job(both, row["id"]) == "done"
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["destination"] == "drive"
    assert set(held(conn, row["id"])) == {"drive", "s3"} and len(drive.backups()) == 1
    assert s3.proxy.ops()["PutObject"] == 1


def test_a_permanent_refusal_at_one_destination_fails_the_file_after_the_other_copy(
    both: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, s3: Bucket
) -> None:
    one_video(both, conn, cdn, redis)
    s3.proxy.add(Fault("PutObject", "status", times=1, status=403, code="AccessDenied"))
    [row] = ledger_rows(conn)
    assert run_job(both, row["id"]) == "failed"
    [row] = ledger_rows(conn)
    assert row["status"] == "failed" and row["last_error"].startswith("s3: S3 answered 403 AccessDenied")
    # The Drive copy was made and stays recorded: retry-failed only has S3 left to do.
    assert set(held(conn, row["id"])) == {"drive"} and len(drive.backups()) == 1


def test_a_source_gone_after_one_copy_leaves_the_file_done_with_that_copy(
    both: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, s3: Bucket
) -> None:
    one_video(both, conn, cdn, redis)
    s3.proxy.add(Fault("PutObject", "status", times=2, status=503, code="ServiceUnavailable"))
    [row] = ledger_rows(conn)
    assert isinstance(run_job(both, row["id"]), Retry)
    # fal's window ends and the file with it, before S3 answers again.
    cdn.file(row["source_url"]).status = 404
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET expires_at = now() - interval '1 hour', next_attempt_at = now()")
    conn.commit()
    assert run_job(both, row["id"]) == "done"
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["destination"] == "drive"
    assert set(held(conn, row["id"])) == {"drive"} and s3.objects() == {}

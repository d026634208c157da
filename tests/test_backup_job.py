"""The backup job: claims, idempotency, retries and the final states of a ledger row."""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import pytest
from redis import Redis
from rq import Queue

from core.config import Config
from db import attempts, copies
from db.connection import Connection, fetch_all
from jobs.backfill import backfill
from jobs.queues import BACKUP_FUNC, enqueue_batch, enqueue_one, job_id
from tests.fakes.cdn import FakeCdn
from tests.support.app_rows import backup_columns, execute
from tests.support.processes import falback
from tests.support.rows import USER_FAILED_QUERY, add_image, add_video, ledger_rows
from tests.support.workers import run_worker, run_worker_process


def backfill_all(config: Config, conn: Connection, redis: Redis) -> None:
    backfill(config, conn, redis, "all", 1000)


def app_row(conn: Connection, table: str, row_id: int) -> dict[str, object]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table} WHERE id = %s", (row_id,))
        rows = fetch_all(cur)
    conn.commit()
    return rows[0]


def test_claim_is_exclusive(config: Config, conn: Connection, cdn: FakeCdn, redis: Redis) -> None:
    add_image(conn, cdn, 1)
    backfill_all(config, conn, redis)
    row_id = ledger_rows(conn)[0]["id"]
    first = attempts.claim(conn, row_id, "worker-a", 60)
    second = attempts.claim(conn, row_id, "worker-b", 60)
    conn.commit()
    assert first is not None and first.attempts == 1
    assert second is None
    # A lease that ran out belongs to a dead worker: the row can be taken again.
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET lease_expires_at = now() - interval '1 second'")
    third = attempts.claim(conn, row_id, "worker-c", 60)
    conn.commit()
    assert third is not None and third.attempts == 2


def test_the_same_job_enqueued_twice_runs_once(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_image(conn, cdn, 1)
    backfill_all(config, conn, redis)
    row = ledger_rows(conn)[0]
    assert enqueue_one(redis, config, row["id"], "image") is False
    assert enqueue_batch(redis, config, [(row["id"], "image")]) == []
    assert redis.llen("rq:queue:backup-images") == 1
    run_worker(config)
    [done] = ledger_rows(conn)
    assert done["status"] == "done" and done["attempts"] == 1
    assert len(list(config.backup_dir.rglob("*-image-1.png"))) == 1


def test_two_workers_on_one_row_copy_it_once(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """Two jobs for the same row (as RQ's at-least-once delivery can produce) and two
    workers at once: one copies, the other finds the row claimed."""
    add_video(conn, cdn, 1, upscale_size=2_000_000, slow_delay=0.01)
    backfill(config, conn, redis, "upscale", 10)
    row = ledger_rows(conn)[0]
    Queue("backup-upscale", connection=redis).enqueue_call(
        BACKUP_FUNC, args=(row["id"],), job_id=f"duplicate-{row['id']}"
    )
    results: list[subprocess.CompletedProcess[str]] = []
    # Real processes: an in-process worker runs only in the main thread (RQ's signals).
    workers = [threading.Thread(target=lambda: results.append(run_worker_process(config))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    outputs = "".join(r.stdout + r.stderr for r in results)
    assert outputs.count("not claimable") == 1, outputs
    [done] = ledger_rows(conn)
    assert done["status"] == "done" and done["attempts"] == 1
    assert len(list(config.backup_dir.rglob("*_up.mp4"))) == 1
    assert len(cdn.file(done["source_url"]).requests) == 1


def test_a_404_past_the_window_is_gone_at_once(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """Eight days after creation fal no longer promises the file: a 404 is its expiry."""
    video_id = add_video(conn, cdn, 1, status=404, age_days=8)
    backfill_all(config, conn, redis)
    run_worker(config)
    [row] = ledger_rows(conn)
    assert row["status"] == "gone" and row["attempts"] == 1
    assert row["last_error"] == "source answered 404: the file has expired at 127.0.0.1"
    video = app_row(conn, "gen_videos", video_id)
    assert video["backup_status"] == "gone"
    assert video["backup_error"] == "regular: source answered 404: the file has expired at 127.0.0.1"


def run_until(config: Config, conn: Connection, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    """Run burst workers (each takes what is due) until the only row reaches `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        run_worker(config)
        [row] = ledger_rows(conn)
        if row["status"] in statuses or time.monotonic() > deadline:
            return row
        time.sleep(0.3)


@pytest.mark.parametrize("status", [404, 410])
def test_a_fresh_404_is_retried_not_final(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, status: int
) -> None:
    """Minutes after its webhook, fal still promises the file for days: a 404 or 410 then
    is an anomaly, retried with backoff without spending attempts, and the file is copied
    once the CDN serves it."""
    video_id = add_video(conn, cdn, 1, status=status, age_days=0.001)
    backfill_all(config, conn, redis)
    run_worker(config)
    [row] = ledger_rows(conn)
    assert row["status"] == "retrying", row["last_error"]
    assert row["attempts"] == 0 and row["missing_since"] is not None
    assert row["last_error"].startswith(
        f"source answered {status}: the file has expired at 127.0.0.1, before fal's window ends"
    )
    assert "retrying until" in row["last_error"]
    assert app_row(conn, "gen_videos", video_id)["backup_status"] == "in_progress"
    cdn.file(row["source_url"]).status = None
    row = run_until(config, conn, {"done", "gone", "failed"})
    assert row["status"] == "done" and row["missing_since"] is None and row["last_error"] is None
    assert app_row(conn, "gen_videos", video_id)["backup_status"] == "completed"


@pytest.mark.parametrize(
    ("age_days", "bound", "reason"),
    [
        (1.0, 3, "still missing after"),  # FALBACK_MISSING_RETRY_SECONDS runs out first
        (7 - 3 / 86400, 86400, None),  # fal's window closes first (3 s from now)
    ],
)
def test_a_missing_file_is_gone_after_the_bound_or_the_window(
    config: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    age_days: float,
    bound: int,
    reason: str | None,
) -> None:
    add_image(conn, cdn, 1, status=404, age_days=age_days)
    config = config.replace(missing_retry_seconds=bound)
    backfill_all(config, conn, redis)
    started = time.monotonic()
    row = run_until(config, conn, {"gone", "done", "failed"})
    assert row["status"] == "gone", row["last_error"]
    assert 2.5 < time.monotonic() - started < 25
    assert row["attempts"] == 1  # the retries inside the window spent none
    assert len(cdn.file(row["source_url"]).requests) >= 2  # tried again before giving up
    if reason:
        assert reason in row["last_error"]
    else:
        assert row["last_error"] == "source answered 404: the file has expired at 127.0.0.1"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://v3.fal.media\uff03@127.0.0.1/files/i.png", "invalid characters under NFKC normalization"),
        ("http://[127.0.0.1/files/i.png", "Invalid IPv6 URL"),
        ("http://127.0.0.1:99999/files/i.png", "Port out of range 0-65535"),
        ("http://127.0.0.1:-1/files/i.png", "Port could not be cast to integer value as '-1'"),
        ("http://127.0.0.1:eighty/files/i.png", "Port could not be cast to integer value as 'eighty'"),
    ],
)
def test_a_malformed_source_url_fails_at_once_with_a_reason(
    config: Config, conn: Connection, redis: Redis, url: str, reason: str
) -> None:
    """The URL parser's own errors used to escape after the claim (the row sat in 'copying'
    until its lease ran out) or count as transient (a bad port): now the row ends 'failed'
    on its first attempt, saying why, with no traceback."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO gen_images (image_url, file_size) VALUES (%s, 10) RETURNING id",
            (url + "?token=s3cret",),
        )
        image_id = cur.fetchone()["id"]  # type: ignore[call-overload, index]
    conn.commit()
    backfill_all(config, conn, redis)
    result = run_worker_process(config)
    [row] = ledger_rows(conn)
    assert (row["status"], row["attempts"], row["claimed_by"]) == ("failed", 1, None)
    assert row["last_error"].startswith("malformed source URL (") and reason in row["last_error"]
    assert "s3cret" not in row["last_error"]
    assert "Traceback" not in result.stdout + result.stderr
    assert app_row(conn, "gen_images", image_id)["backup_status"] == "failed"


def test_a_source_truncated_every_time_fails_after_max_attempts(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    video_id = add_video(conn, cdn, 1, size=1_000_000, truncate_at=400_000)
    backfill_all(config, conn, redis)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_worker(config)  # burst: each run takes what is due; retries come back after backoff
        if ledger_rows(conn)[0]["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    [row] = ledger_rows(conn)
    assert row["status"] == "failed"
    assert row["attempts"] == config.max_attempts == 3
    assert row["last_error"].startswith("gave up after 3 attempts: source body cut off at byte 262144")
    assert not list(config.backup_dir.rglob("*.mp4")) and not list(config.backup_dir.rglob(".*.part"))
    with conn.cursor() as cur:
        cur.execute(USER_FAILED_QUERY)
        failed = fetch_all(cur)
    conn.commit()
    assert [(r["id"], r["backup_status"]) for r in failed] == [(video_id, "failed")]


def test_a_transient_error_is_retried_then_succeeds(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    url_id = add_image(conn, cdn, 1, size=50_000, status=503)
    backfill_all(config, conn, redis)
    run_worker(config)
    [row] = ledger_rows(conn)
    assert row["status"] == "retrying" and row["last_error"] == "source answered 503 from 127.0.0.1"
    assert row["next_attempt_at"] is not None
    assert app_row(conn, "gen_images", url_id)["backup_status"] == "in_progress"
    cdn.file(row["source_url"]).status = None
    deadline = time.monotonic() + 30
    while ledger_rows(conn)[0]["status"] != "done" and time.monotonic() < deadline:
        time.sleep(0.5)
        run_worker(config)
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["attempts"] == 2 and row["last_error"] is None
    assert app_row(conn, "gen_images", url_id)["backup_status"] == "completed"
    # The verified copy is on record under its destination, once.
    [copy] = copies.of_file(conn, row["id"])
    assert (copy.destination, copy.location, copy.size_bytes, copy.md5) == (
        "local",
        row["destination_id"],
        50_000,
        row["md5"],
    )


def test_a_blocked_host_is_a_permanent_failure(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_image(conn, cdn, 1)
    backfill_all(config, conn, redis)
    run_worker(config.replace(source_hosts=("*.fal.media",)))
    [row] = ledger_rows(conn)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == "host 127.0.0.1 is not in FALBACK_SOURCE_HOSTS (*.fal.media)"


def test_a_copy_already_at_the_destination_is_not_made_again(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """A worker that died after writing the file but before recording it: the retry finds
    the verified copy instead of fetching the source again."""
    add_image(conn, cdn, 1, size=30_000)
    backfill_all(config, conn, redis)
    run_worker(config)
    [row] = ledger_rows(conn)
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET status = 'queued' WHERE id = %s", (row["id"],))
    conn.commit()
    redis.delete(f"rq:job:{job_id(row['id'])}")
    assert enqueue_one(redis, config, row["id"], "image")
    run_worker(config)
    [again] = ledger_rows(conn)
    assert again["status"] == "done" and again["md5"] == row["md5"]
    assert len(cdn.file(row["source_url"]).requests) == 1


def test_a_worker_that_lost_its_claim_cannot_record(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """After A's lease ran out and B took the row, A's late writes change nothing."""
    add_image(conn, cdn, 1)
    backfill_all(config, conn, redis)
    row_id = ledger_rows(conn)[0]["id"]
    assert attempts.claim(conn, row_id, "worker-a", 60) is not None
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET lease_expires_at = now() - interval '1 second'")
    assert attempts.claim(conn, row_id, "worker-b", 60) is not None
    late_copy = copies.NewCopy("local", "x", "file:///x", 1, "0" * 32)
    assert not attempts.record_copy(conn, row_id, "worker-a", late_copy)
    assert attempts.record_done(conn, row_id, "worker-a", ["local"], last=late_copy).kept is None
    assert not attempts.record_final(conn, row_id, "worker-a", "failed", "late")
    assert attempts.record_retry(conn, row_id, "worker-a", "late", 10) is None
    conn.commit()
    [row] = ledger_rows(conn)
    assert (row["status"], row["claimed_by"], row["last_error"]) == ("copying", "worker-b", None)
    assert copies.of_file(conn, row_id) == []


def test_a_retry_is_not_claimed_before_its_backoff_ends(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_image(conn, cdn, 1)
    backfill_all(config, conn, redis)
    row_id = ledger_rows(conn)[0]["id"]
    assert attempts.claim(conn, row_id, "worker-a", 60) is not None
    assert attempts.record_retry(conn, row_id, "worker-a", "source answered 503", 60)
    assert attempts.claim(conn, row_id, "duplicate-job", 60) is None
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET next_attempt_at = now()")
    assert attempts.claim(conn, row_id, "the-retry", 60) is not None
    conn.commit()


def test_a_sources_retry_after_sets_the_next_attempt(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_image(conn, cdn, 1, status=429, retry_after=600)
    backfill_all(config, conn, redis)
    run_worker(config)
    [row] = ledger_rows(conn)
    assert row["status"] == "retrying" and row["last_error"] == "source answered 429 from 127.0.0.1"
    with conn.cursor() as cur:
        cur.execute("SELECT extract(epoch FROM next_attempt_at - now()) AS wait FROM ledger")
        wait = fetch_all(cur)[0]["wait"]
    conn.commit()
    assert 590 < wait <= 600  # not the configured 1 s backoff


def test_retry_failed_gives_failed_files_new_attempts(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """After the cause is fixed, `falback retry-failed` backs the failed files up."""
    video_id = add_video(conn, cdn, 1, size=20_000)
    add_image(conn, cdn, 1)
    backfill_all(config, conn, redis)
    run_worker(config.replace(source_hosts=("*.fal.media",)))  # a misconfiguration: all fail
    assert {r["status"] for r in ledger_rows(conn)} == {"failed"}
    result = falback(config, "retry-failed", "--type", "regular")
    assert result.returncode == 0, result.stderr
    assert "1 failed file(s) back to pending" in result.stdout and "dispatched 1 file(s) now" in result.stdout
    run_worker(config)
    by_kind = {r["kind"]: r for r in ledger_rows(conn)}
    assert by_kind["regular"]["status"] == "done" and by_kind["regular"]["attempts"] == 1
    assert by_kind["image"]["status"] == "failed"
    assert app_row(conn, "gen_videos", video_id)["backup_status"] == "completed"


def test_an_app_row_that_refuses_every_write_does_not_keep_its_file_from_being_backed_up(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """The user's table refusing the backup_* update (here a trigger; a lock timeout or a
    changed schema alike) must not undo the claim or the done: the file is backed up, its
    app row is left as it was, and a warning says so."""
    add_video(conn, cdn, 1)
    backfill(config, conn, redis, "all", 10)
    execute(
        conn,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'read-only'; END$$;"
        " CREATE TRIGGER refuse BEFORE UPDATE ON gen_videos FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    run_worker(config)
    [row] = ledger_rows(conn)
    assert (row["status"], row["attempts"]) == ("done", 1)
    assert (
        backup_columns(conn, int(row["source_id"]))["backup_status"] == "pending"
    )  # as the backfill left it
    assert "not brought up to date: RaiseException: read-only" in caplog.text

"""The sweep (each category, exact counts, bounded and batched), `falback sweep`, and the
cron process that schedules it and the daily backfill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import psycopg2.extras
import pytest
import redis.connection
from redis import Redis
from rq import Queue
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from core.config import Config, ConfigError, DailyBackfill
from db import app_rows, sweeps
from db.connection import Connection, connect, fetch_one
from jobs.backfill import backfill
from jobs.queues import BACKUP_FUNC, MAINTENANCE_QUEUE, job_id
from jobs.schedule import build_scheduler
from jobs.sweep import SweepCounts, sweep
from tests.fakes.cdn import FakeCdn
from tests.support.processes import background, falback
from tests.support.rows import add_image, add_video, ledger_rows
from tests.support.servers import Servers
from tests.support.wait import wait_for
from tests.support.workers import kill_worker, run_worker, worker_process

IMAGES = "backup-images"


def execute(conn: Connection, sql: str, *params: object) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.commit()


def one_pass(config: Config, conn: Connection, redis: Redis) -> SweepCounts:
    counts = sweep(config, conn, redis)
    assert counts is not None, "no other sweep runs in these tests"
    return counts


def ledger_id_for(conn: Connection, image: int) -> int:
    rows = app_rows.upsert_app_row(conn, "gen_images", str(image), 7)
    conn.commit()
    return int(rows[0]["id"])


def put_job(redis: Redis, ledger_id: int, status: JobStatus) -> None:
    """A backup job for the row, as RQ would leave it in `status`."""
    queue = Queue(IMAGES, connection=redis)
    if status == JobStatus.SCHEDULED:
        queue.enqueue_in(timedelta(minutes=5), BACKUP_FUNC, ledger_id, job_id=job_id(ledger_id))
        return
    job = queue.enqueue_call(BACKUP_FUNC, args=(ledger_id,), job_id=job_id(ledger_id))
    if status == JobStatus.QUEUED:
        return
    queue.remove(job)
    job.set_status(status)
    if status == JobStatus.FAILED:
        FailedJobRegistry(queue=queue).add(job, exc_string="boom")


def test_each_category_with_exact_counts(
    config: Config, conn: Connection, redis: Redis, cdn: FakeCdn
) -> None:
    images = [add_image(conn, cdn, n) for n in range(17)]
    ids = {n: ledger_id_for(conn, images[n]) for n in range(2, 17)}  # images 0-1: no ledger row

    def set_rows(numbers: list[int], sql: str) -> None:
        execute(conn, f"UPDATE ledger SET {sql} WHERE id = ANY(%s)", [ids[n] for n in numbers])

    # (b) images 2-3 stay 'pending' (the backlog, with 0-1 once created).
    # (c) 'queued': 4-5 have live jobs; 6-7 lost theirs; 8's job failed.
    set_rows([4, 5, 6, 7, 8], "status = 'queued', queued_at = now()")
    put_job(redis, ids[4], JobStatus.QUEUED)
    put_job(redis, ids[5], JobStatus.QUEUED)
    put_job(redis, ids[8], JobStatus.FAILED)
    # (d) 'retrying': 9 due, no job; 10 due, job failed; 11 due, RQ's retry is scheduled;
    # 12 not due yet.
    set_rows([9, 10, 11], "status = 'retrying', attempts = 1, next_attempt_at = now() - interval '1s'")
    set_rows([12], "status = 'retrying', attempts = 1, next_attempt_at = now() + interval '1h'")
    put_job(redis, ids[10], JobStatus.FAILED)
    put_job(redis, ids[11], JobStatus.SCHEDULED)
    # (e) 'copying': 13 lease expired, no job; 16 lease expired, its job left 'started' by a
    # killed worker; 14 lease still valid; 15 lease expired on the last allowed attempt.
    set_rows(
        [13, 16],
        "status = 'copying', attempts = 1, claimed_by = 'dead', lease_expires_at = now() - interval '1s'",
    )
    set_rows(
        [14],
        "status = 'copying', attempts = 1, claimed_by = 'alive', lease_expires_at = now() + interval '1h'",
    )
    set_rows(
        [15],
        f"status = 'copying', attempts = {config.max_attempts}, claimed_by = 'dead',"
        " lease_expires_at = now() - interval '1s'",
    )
    put_job(redis, ids[16], JobStatus.STARTED)

    # A window wide enough for every pending row: this test is about the categories.
    config = config.replace(queue_window_per_worker=100)
    counts = sweep(config, conn, redis)

    assert counts == SweepCounts(
        created=2, lost_queued=3, retrying_due=2, expired_leases=2, gave_up=1, dispatched=4
    )
    by_source = {int(r["source_id"]): r for r in ledger_rows(conn)}
    status = {n: by_source[images[n]]["status"] for n in range(17)}
    assert [n for n in range(17) if status[n] == "queued"] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 16]
    assert (status[11], status[12], status[14], status[15]) == ("retrying", "retrying", "copying", "failed")
    assert by_source[images[15]]["last_error"] == (
        f"gave up after {config.max_attempts} attempts: the worker stopped mid-copy (lease expired)"
    )
    assert by_source[images[13]]["claimed_by"] is None
    with conn.cursor() as cur:
        cur.execute("SELECT backup_status FROM gen_images WHERE id = %s", (images[15],))
        assert fetch_one(cur) == {"backup_status": "failed"}
    conn.commit()

    # Exactly one live job per queued row: none doubled, none left failed.
    queue = Queue(IMAGES, connection=redis)
    queued_ids = sorted(by_source[images[n]]["id"] for n in range(17) if status[n] == "queued")
    assert sorted(queue.get_job_ids()) == sorted(job_id(i) for i in queued_ids)
    assert {
        j.get_status() for j in Job.fetch_many(queue.get_job_ids(), connection=redis) if j is not None
    } == {JobStatus.QUEUED}
    assert FailedJobRegistry(queue=queue).get_job_ids(cleanup=False) == []
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    assert scheduled.get_job_ids(cleanup=False) == [job_id(ids[11])]

    # A second pass finds nothing to do and adds nothing.
    assert sweep(config, conn, redis) == SweepCounts()
    assert queue.count == len(queued_ids)

    run_worker(config)
    done = [r for r in ledger_rows(conn) if r["status"] == "done"]
    assert len(done) == len(queued_ids)


def test_passes_never_overlap(config: Config, conn: Connection, redis: Redis, database_url: str) -> None:
    execute(conn, "INSERT INTO gen_images (image_url) VALUES ('https://fal.media/files/i/1.png')")
    other = connect(database_url)
    try:
        assert sweeps.try_lock(other), "a sweep in another process"
        assert sweep(config, conn, redis) is None
        assert ledger_rows(conn) == []
        sweeps.unlock(other)
        assert sweep(config, conn, redis) == SweepCounts(created=1, dispatched=1)
        assert sweeps.try_lock(other), "released after the pass"
    finally:
        other.close()


class Trips:
    """Counts round trips: Redis commands or pipelines sent, SQL statements executed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, conn: Connection) -> None:
        self.redis = 0
        self.sql = 0
        trips = self
        send = redis.connection.Connection.send_packed_command

        def counting_send(self: redis.connection.Connection, command: Any, check_health: bool = True) -> None:
            trips.redis += 1
            send(self, command, check_health)  # type: ignore[no-untyped-call]

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting_send)

        class CountingCursor(psycopg2.extras.RealDictCursor):
            def execute(self, query: Any, vars: Any = None) -> None:  # noqa: A002 - psycopg2's name
                trips.sql += 1
                super().execute(query, vars)

        conn.cursor_factory = CountingCursor


def test_it_is_bounded_and_batched(
    config: Config, conn: Connection, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 2500
    psycopg2.extras.execute_values(
        conn.cursor(),
        "INSERT INTO gen_images (image_url, file_size) VALUES %s",
        [(f"https://fal.media/files/i/{i}.png", 1000) for i in range(n)],
    )
    conn.commit()
    trips = Trips(monkeypatch, conn)

    first = one_pass(config.replace(sweep_limit=2000), conn, redis)

    assert first.created == 2000, "bounded by FALBACK_SWEEP_LIMIT"
    assert first.dispatched == 2, "the window: FALBACK_QUEUE_WINDOW x at least one worker"
    assert trips.redis < 20 and trips.sql < 20, f"{trips.redis} Redis and {trips.sql} SQL round trips"
    # Flushing Redis loses every job: the next pass re-enqueues the queued rows (the
    # window) and creates the rest, which wait in Postgres.
    redis.flushall()
    second = one_pass(config.replace(sweep_limit=2000), conn, redis)
    assert (second.created, second.lost_queued, second.dispatched) == (500, 2, 0)
    third = one_pass(config, conn, redis)
    assert (third.created, third.lost_queued, third.dispatched) == (0, 0, 0)
    assert Queue(IMAGES, connection=redis).count == 2
    assert trips.redis < 60 and trips.sql < 60, f"{trips.redis} Redis and {trips.sql} SQL round trips"


def test_the_sweep_command(config: Config, conn: Connection, cdn: FakeCdn) -> None:
    add_image(conn, cdn, 1)
    add_image(conn, cdn, 2)
    result = falback(config, "sweep")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "sweep: created=2 lost_queued=0 retrying_due=0 expired_leases=0 gave_up=0 dispatched=2 fal_results=0"
    )
    add_image(conn, cdn, 3)
    down = falback(config.replace(redis_url="redis://127.0.0.1:9/0"), "sweep")
    assert down.returncode == 1
    assert "Redis unavailable" in down.stderr and "Traceback" not in down.stderr
    assert [r["status"] for r in ledger_rows(conn)] == ["queued", "queued", "pending"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DailyBackfill(2, 0, "upscale", 50)),
        ("02:00 upscale 50", DailyBackfill(2, 0, "upscale", 50)),
        ("  7:05   images 10 ", DailyBackfill(7, 5, "images", 10)),
        ("23:59 all 100000", DailyBackfill(23, 59, "all", 100_000)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_daily_backfill_setting(value: str | None, expected: DailyBackfill | None) -> None:
    env = {"FALBACK_DAILY_BACKFILL": value} if value is not None else {}
    config = Config.from_env(env)
    assert config.daily_backfill == expected
    assert Config.from_env(config.as_env()) == config


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FALBACK_DAILY_BACKFILL", "2am upscale 50", "must be 'HH:MM TYPE LIMIT' (UTC"),
        ("FALBACK_DAILY_BACKFILL", "02:00 upscale", "must be 'HH:MM TYPE LIMIT'"),
        ("FALBACK_DAILY_BACKFILL", "24:00 upscale 50", "24:00 is not a time of day"),
        ("FALBACK_DAILY_BACKFILL", "02:60 upscale 50", "02:60 is not a time of day"),
        ("FALBACK_DAILY_BACKFILL", "02:00 gifs 50", "type must be one of upscale, regular, images, all"),
        ("FALBACK_DAILY_BACKFILL", "02:00 upscale 0", "limit must be at least 1"),
        ("FALBACK_DAILY_BACKFILL", "02:00 upscale 100001", "above FALBACK_MAX_BACKFILL_LIMIT"),
        ("FALBACK_SWEEP_INTERVAL", "2m", "FALBACK_SWEEP_INTERVAL must be a whole number"),
        ("FALBACK_SWEEP_INTERVAL", "0", "FALBACK_SWEEP_INTERVAL must be at least 1"),
        ("FALBACK_SWEEP_LIMIT", "0", "FALBACK_SWEEP_LIMIT must be at least 1"),
    ],
)
def test_bad_schedule_settings_stop_start_up(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Config.from_env({name: value})


def test_the_schedule_registers_the_sweep_and_the_daily_backfill(redis: Redis) -> None:
    config = Config.from_env({"FALBACK_SWEEP_INTERVAL": "300", "FALBACK_DAILY_BACKFILL": "02:30 upscale 50"})
    jobs = {job.name: job for job in build_scheduler(config, redis).get_jobs()}
    assert set(jobs) == {"falback-sweep", "falback-daily-backfill", "falback-verify"}
    sweep_job, daily = jobs["falback-sweep"], jobs["falback-daily-backfill"]
    assert (sweep_job.func_name, sweep_job.queue_name, sweep_job.interval) == (
        "jobs.sweep.scheduled_sweep",
        MAINTENANCE_QUEUE,
        300,
    )
    assert (daily.func_name, daily.queue_name, daily.cron, daily.args) == (
        "jobs.schedule.daily_backfill",
        MAINTENANCE_QUEUE,
        "30 2 * * *",
        ("upscale", 50),
    )
    assert daily.next_enqueue_time is not None
    next_run = daily.next_enqueue_time.astimezone(UTC)
    assert (next_run.hour, next_run.minute) == (2, 30)

    off = Config.from_env({"FALBACK_DAILY_BACKFILL": "off", "FALBACK_VERIFY_SCHEDULE": "off"})
    assert [job.name for job in build_scheduler(off, redis).get_jobs()] == ["falback-sweep"]


@pytest.fixture
def maintenance(redis: Redis) -> Iterator[Queue]:
    yield Queue(MAINTENANCE_QUEUE, connection=redis)


def test_the_cron_process_really_runs_the_sweep(
    config: Config, conn: Connection, cdn: FakeCdn, maintenance: Queue
) -> None:
    for n in range(3):
        add_image(conn, cdn, n)
    scheduled = config.replace(sweep_interval_seconds=1, daily_backfill=None)
    with background(scheduled, "cron") as cron:
        # Every second: at least two sweeps enqueued within a few seconds.
        wait_for(lambda: maintenance.count >= 2, 10, "two scheduled sweeps on the maintenance queue")
        assert cron.stop() == 0
    assert "scheduled falback-sweep on falback-maintenance: every 1s" in cron.output
    assert "cron stopped" in cron.output
    sweeps = maintenance.get_job_ids()

    run_worker(config)  # serves the maintenance queue first, then the backups it enqueued

    results = [Job.fetch(i, connection=maintenance.connection).return_value() for i in sweeps]
    assert results[0] is not None and results[0]["created"] == 3
    assert all(r is not None and r["created"] == 0 for r in results[1:])
    assert [r["status"] for r in ledger_rows(conn)] == ["done"] * 3


def test_cron_waits_out_a_redis_outage(config: Config, servers: Servers, maintenance: Queue) -> None:
    scheduled = config.replace(sweep_interval_seconds=60, daily_backfill=None)
    servers.redis.stop()
    with background(scheduled, "cron") as cron:
        try:
            cron.wait_for_log("redis unavailable", times=2)  # retrying, not exiting
        finally:
            servers.redis.start()  # same port, empty
        wait_for(lambda: maintenance.count == 1, 10, "the sweep that was due during the outage")
        assert cron.stop() == 0


def test_the_daily_backfill_runs_on_the_worker(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, maintenance: Queue
) -> None:
    for n in range(4):
        add_video(conn, cdn, n, upscale_size=30_000 + n, age_days=5 - n)
    daily = config.replace(daily_backfill=DailyBackfill(2, 0, "upscale", 2))
    [cron_job] = [j for j in build_scheduler(daily, redis).get_jobs() if j.name == "falback-daily-backfill"]
    cron_job.enqueue(redis)  # what the scheduler does at 02:00

    run_worker(daily)

    rows = ledger_rows(conn)
    assert [(r["kind"], r["source_id"], r["status"]) for r in rows] == [
        ("upscale", "1", "done"),
        ("upscale", "2", "done"),  # the two oldest upscales
    ]
    [result] = [Job.fetch(i, connection=redis).return_value() for i in cron_job.get_job_ids(redis)]
    assert result is not None and result["files"] == 2 and result["type"] == "upscale"


def copying_row(conn: Connection, cdn: FakeCdn, redis: Redis, config: Config) -> int:
    """A row whose worker died mid-copy: 'copying', lease run out."""
    add_image(conn, cdn, 1)
    ledger_id = ledger_id_for(conn, 1)
    execute(
        conn,
        "UPDATE ledger SET status = 'copying', attempts = 1, claimed_by = 'dead',"
        " lease_expires_at = now() - interval '1s' WHERE id = %s",
        ledger_id,
    )
    return ledger_id


def started_job(redis: Redis, ledger_id: int) -> Execution:
    """The job as RQ leaves it when its worker is killed: 'started', with an execution."""
    queue = Queue(IMAGES, connection=redis)
    job = queue.enqueue_call(BACKUP_FUNC, args=(ledger_id,), job_id=job_id(ledger_id))
    queue.remove(job)
    with redis.pipeline() as pipe:
        execution = Execution.create(job, ttl=60, pipeline=pipe)
        job.set_status(JobStatus.STARTED, pipeline=pipe)
        pipe.execute()
    return execution


def _expired_execution(redis: Redis, key: str, execution: Execution) -> None:
    redis.delete(execution.key)  # its TTL ran out; its registry entries outlive it by 60 s


def _unreadable_date(redis: Redis, key: str, execution: Execution) -> None:
    redis.hset(key, "created_at", "not a date")


def _unknown_status(redis: Redis, key: str, execution: Execution) -> None:
    redis.hset(key, "status", "zombie")


def _no_origin(redis: Redis, key: str, execution: Execution) -> None:
    redis.hdel(key, "origin")


def _wrong_type_registry(redis: Redis, key: str, execution: Execution) -> None:
    redis.delete(execution.key)
    redis.delete(f"rq:executions:{key.rsplit(':', 1)[1]}")
    redis.set(f"rq:executions:{key.rsplit(':', 1)[1]}", "not a sorted set")


@pytest.mark.parametrize(
    "damage", [_expired_execution, _unreadable_date, _unknown_status, _no_origin, _wrong_type_registry]
)
def test_a_stale_rq_record_does_not_stop_the_sweep(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, damage: Any
) -> None:
    """Whatever RQ's own records of an old job look like, the sweep deletes the job and
    the row ends on a queue, with nothing of the old job left to fail the new one."""
    ledger_id = copying_row(conn, cdn, redis, config)
    execution = started_job(redis, ledger_id)
    damage(redis, Job.key_for(job_id(ledger_id)), execution)

    assert one_pass(config, conn, redis) == SweepCounts(expired_leases=1)

    [row] = ledger_rows(conn)
    assert row["status"] == "queued"
    queue = Queue(IMAGES, connection=redis)
    assert queue.get_job_ids() == [job_id(ledger_id)]
    assert Job.fetch(job_id(ledger_id), connection=redis).get_status() == JobStatus.QUEUED
    assert redis.zrange(StartedJobRegistry(IMAGES, connection=redis).key, 0, -1) == []
    run_worker(config)
    assert ledger_rows(conn)[0]["status"] == "done"


def test_a_queued_row_whose_started_job_stopped_heartbeating_gets_a_new_job(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """A pass that stopped between marking a row 'queued' and enqueueing it (Redis went
    away) leaves the dead worker's 'started' job: the next pass must not take it for a
    live one."""
    add_image(conn, cdn, 1)
    ledger_id = ledger_id_for(conn, 1)
    execute(conn, "UPDATE ledger SET status = 'queued', queued_at = now() WHERE id = %s", ledger_id)
    execution = started_job(redis, ledger_id)
    registry = StartedJobRegistry(IMAGES, connection=redis)
    assert one_pass(config, conn, redis) == SweepCounts()  # heartbeat still fresh: left alone
    redis.zadd(registry.key, {execution.composite_key: time.time() - 1})  # heartbeat lapsed

    assert one_pass(config, conn, redis) == SweepCounts(lost_queued=1)
    assert Job.fetch(job_id(ledger_id), connection=redis).get_status() == JobStatus.QUEUED
    run_worker(config)
    assert ledger_rows(conn)[0]["status"] == "done"


def test_a_sweep_just_after_a_killed_workers_lease_ran_out(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """For real: a worker SIGKILLed mid-copy, then `falback sweep` once its lease is over.

    RQ records the job's execution with a TTL of its heartbeat (min(job timeout, 30) + 60 s)
    and lists it in the job's execution registry for 60 s longer; the lease is the job
    timeout + 60 s. Right after the lease, RQ's delete of the dead job raised "Execution ...
    not found in Redis", after the row was 'queued' and before it had a job. With a 5 s job
    timeout both run out about 65 s after the job started.
    """
    add_image(conn, cdn, 1, size=2_000_000, slow_delay=0.5)
    backfill(config.replace(job_timeout_seconds=5), conn, redis, "images", 10)
    [row] = ledger_rows(conn)
    worker = worker_process(config)
    try:
        wait_for(lambda: ledger_rows(conn)[0]["status"] == "copying", 20, "the copy to start")
    finally:
        kill_worker(worker.pid)
        worker.communicate(timeout=10)
    executions = ExecutionRegistry(job_id(row["id"]), connection=redis)
    [execution_id] = executions.get_execution_ids()
    execution_key = f"rq:execution:{job_id(row['id'])}:{execution_id}"

    def lease_over_and_execution_expired() -> bool:
        with conn.cursor() as cur:
            cur.execute("SELECT lease_expires_at < now() AS over FROM ledger")
            over = bool(fetch_one(cur)["over"])  # type: ignore[index]
        conn.commit()
        return over and not redis.exists(execution_key)

    wait_for(
        lease_over_and_execution_expired, 90, "the lease and RQ's execution record to run out", interval=0.5
    )
    assert executions.get_execution_ids() == [execution_id], "the registry entry outlives it"

    result = falback(config, "sweep")

    assert result.returncode == 0, result.stderr
    assert "expired_leases=1" in result.stdout
    assert ledger_rows(conn)[0]["status"] == "queued"
    assert Job.fetch(job_id(row["id"]), connection=redis).get_status() == JobStatus.QUEUED
    cdn.file(row["source_url"]).slow_delay = 0
    run_worker(config)
    [done] = ledger_rows(conn)
    assert done["status"] == "done" and done["attempts"] == 2

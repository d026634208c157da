"""The cron process: RQ's CronScheduler (rq >= 2.4) puts the periodic sweep and the daily
backfill on the maintenance queue, which `falback worker` serves first, and the weekly
verify on a queue of its own, served last.

Why jobs on a queue rather than running them in this process: RQ's CronScheduler only
enqueues (that is its whole API in rq 2.12), the results and failures then show in the
dashboard like any job, and the worker already has the configuration and connections.
The sweep and the backfill only read and write Postgres and dispatch a window, so they
take seconds; the verify reads every copy back (jobs/verify.py) and may take hours, hence
its own timeout.

Why `falback cron` rather than `rq cron <module>`: it reads the one Config (strictly,
at start-up) and finds the embedded Redis like every other falback command, and its
loop survives a Redis outage (rq 2.12's `CronScheduler.start()` ends the process on a
Redis error, which under `falback up` or a Procfile runner means a crash loop).

Cron expressions are evaluated in UTC (rq.cron uses datetime.now(timezone.utc)).
Run one cron process only: two would enqueue every job twice.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis, RedisError
from rq.cron import CronScheduler

from core.config import Config
from core.lifecycle import Backoff, GracefulStop
from jobs.backfill import backfill
from jobs.queues import MAINTENANCE_QUEUE, VERIFY_QUEUE
from jobs.sweep import scheduled_sweep
from jobs.verify import scheduled_verify
from jobs.worker import WorkerContext

log = logging.getLogger(__name__)

SWEEP_TIMEOUT = 900
BACKFILL_TIMEOUT = 3600
VERIFY_TIMEOUT = 24 * 3600
RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600


def build_scheduler(config: Config, redis: Redis) -> CronScheduler:
    scheduler = CronScheduler(connection=redis)
    interval = config.sweep_interval_seconds
    scheduler.register(
        scheduled_sweep,
        MAINTENANCE_QUEUE,
        interval=interval,
        name="falback-sweep",
        job_timeout=SWEEP_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        # With no worker running, stale sweeps expire instead of piling up.
        ttl=max(2 * interval, 300),
    )
    daily = config.daily_backfill
    if daily is not None:
        scheduler.register(
            daily_backfill,
            MAINTENANCE_QUEUE,
            args=(daily.type, daily.limit),
            cron=daily.cron,
            name="falback-daily-backfill",
            job_timeout=BACKFILL_TIMEOUT,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            ttl=12 * 3600,
        )
    if config.verify_schedule is not None:
        scheduler.register(
            scheduled_verify,
            VERIFY_QUEUE,
            cron=config.verify_schedule,
            name="falback-verify",
            job_timeout=VERIFY_TIMEOUT,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            ttl=24 * 3600,
        )
    return scheduler


def daily_backfill(context: WorkerContext, type_: str, limit: int) -> dict[str, Any]:
    """The user's daily cron call, `{"type": type_, "limit": limit}`, as a job."""
    conn = context.db()
    try:
        summary = backfill(context.config, conn, context.redis, type_, limit)
    finally:
        conn.rollback()
    log.info(
        "daily backfill %s %d: %d file(s) added to the backlog, %d dispatched at once",
        type_,
        limit,
        summary.files,
        summary.dispatched,
    )
    return summary.as_dict()


def run_cron(config: Config) -> int:
    """Schedule until SIGTERM/SIGINT. A Redis outage pauses scheduling, with backoff;
    a job that was due meanwhile is enqueued once Redis is back."""
    assert config.redis_url
    stop = GracefulStop().install()
    redis = Redis.from_url(config.redis_url, socket_connect_timeout=5, socket_timeout=30)
    scheduler = build_scheduler(config, redis)
    for job in scheduler.get_jobs():
        log.info(
            "scheduled %s on %s: %s",
            job.name,
            job.queue_name,
            f"every {job.interval}s" if job.interval else f"cron '{job.cron}' (UTC)",
        )
    backoff = Backoff()
    try:
        while not stop.requested:
            try:
                scheduler.register_birth()
                while not stop.requested:
                    # The same steps as CronScheduler.start(), whose loop cannot be stopped
                    # without an exception and exits on the first Redis error.
                    if scheduler.enqueue_jobs():
                        scheduler.save()
                    scheduler.heartbeat()
                    backoff.reset()
                    stop.wait(scheduler.calculate_sleep_interval())
            except RedisError as e:
                delay = backoff.next()
                log.warning("redis unavailable (%s); scheduling resumes in %.1fs", e, delay)
                stop.wait(delay)
    finally:
        try:
            scheduler.register_death()
        except RedisError:
            pass  # its registry entry expires by itself
        redis.close()
        stop.close()
    log.info("cron stopped")
    return 0

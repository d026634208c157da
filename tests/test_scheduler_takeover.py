"""Every retry is a scheduled RQ job, enqueued by the worker that holds the scheduler
lock. When that worker dies (kill -9), another worker must take the scheduler over soon
after the dead one's lock runs out, not at RQ's 10-minute maintenance pass."""

from __future__ import annotations

from datetime import timedelta

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE

from core.config import Config
from jobs.queues import MAINTENANCE_QUEUE, worker_queues
from jobs.worker import SCHEDULER_TAKEOVER_SECONDS
from tests.support.processes import background
from tests.support.wait import wait_for


def test_a_scheduled_job_runs_soon_after_the_scheduler_holder_died(config: Config, redis: Redis) -> None:
    # The dead worker's locks, one per queue it served (all of a worker's queues): still
    # there when the new worker starts, gone soon after.
    locks = [SCHEDULER_LOCKING_KEY_TEMPLATE % q.name for q in worker_queues(redis)]
    for lock in locks:
        redis.set(lock, "dead-worker", px=10_000)
    job = Queue(MAINTENANCE_QUEUE, connection=redis).enqueue_in(
        timedelta(seconds=1), "jobs.sweep.scheduled_sweep", job_id="scheduled-sweep-probe"
    )
    with background(config, "worker") as worker:
        worker.wait_for_log("Listening on", timeout=10)
        assert redis.get(locks[0]) == b"dead-worker", "the worker must start while the lock is held"
        wait_for(
            lambda: Job.fetch(job.id, connection=redis).get_status() == JobStatus.FINISHED,
            10 + SCHEDULER_TAKEOVER_SECONDS + 15,
            "the scheduled job to run",
            interval=0.5,
        )

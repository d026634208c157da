"""The worker process: what every job receives (config and connections), and the RQ worker
that hands it over.

A job function takes a `WorkerContext` as its first argument; the queue stores only the
other arguments (ledger id, delivery id ...). `ContextJob` puts the context in front when
the job runs, so no job reads a module global or the environment.

The context opens its connections lazily, in the process that uses them: an in-process
worker (RQ's `SimpleWorker`: `falback worker`) reuses one Postgres connection for job after
job, and a forking worker's work horse (`falback worker --fork`) opens its own, never the
parent's.

After each job, and once when it starts, a worker tops up the backup queues it serves
from the backlog in Postgres (jobs/dispatch.py): the queues hold only a window of work.

Shutdown: a SIGTERM to the worker (or to its work horse) mid-job gives the job
SHUTDOWN_GRACE_SECONDS to finish; past that, or at a second SIGTERM, the job is
interrupted and hands its row back (the backup job records a retry), so no row is left
leased to a process that is gone. (RQ's own horse dies at once on SIGTERM, its cold
shutdown SIGKILLs it, and its in-process worker lets a job run on without bound.)
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType
from typing import Any

import psycopg2
from redis import Redis, RedisError
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import ShutDownImminentException
from rq.job import Job
from rq.worker import WorkerStatus

from core.config import Config
from db.connection import Connection, connect
from jobs.dispatch import top_up
from jobs.queues import QUEUE_FOR_KIND

log = logging.getLogger(__name__)


class WorkerContext:
    """Config and connections for the jobs of one worker process."""

    def __init__(self, config: Config, redis: Redis) -> None:
        assert config.database_url, "workers need DATABASE_URL"
        self.config = config
        self.redis = redis
        self._db: Connection | None = None
        self._pid = os.getpid()

    def db(self) -> Connection:
        """This process's Postgres connection, opened on first use; reopened if it broke."""
        if self._pid != os.getpid():
            # A forked work horse: the parent's socket is not ours to use or close.
            self._db, self._pid = None, os.getpid()
        if self._db is not None:
            try:
                self._db.rollback()  # whatever the last job left open
            except psycopg2.Error:
                self._db.close()  # broken (say, Postgres restarted): open a new one
            if self._db.closed:
                self._db = None
        if self._db is None:
            assert self.config.database_url
            self._db = connect(self.config.database_url, application_name="falback-worker")
        return self._db

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None


class ContextJob(Job):
    """A job whose function gets the worker's context as its first argument."""

    context: WorkerContext | None = None

    def _execute(self) -> Any:
        if self.context is None:
            raise RuntimeError(f"job {self.id} ran outside a falback worker (no context)")
        assert self.func is not None
        return self.func(self.context, *self.args, **self.kwargs)


class _GivesContext:
    context: WorkerContext
    queues: list[Queue]

    def perform_job(self, job: Job, queue: Queue) -> bool:
        if isinstance(job, ContextJob):
            job.context = self.context
        return super().perform_job(job, queue)  # type: ignore[misc, no-any-return]

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self.top_up()  # a worker that joins widens the windows: fill them before waiting
        return super().work(*args, **kwargs)  # type: ignore[misc, no-any-return]

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)  # type: ignore[misc]
        # In this process (a forking worker's parent, not its horse): a job's slot is free.
        self.top_up()

    def top_up(self) -> None:
        """Refill the windows of the backup queues this worker serves; a failure is left to
        the next job's top-up or the sweep."""
        served = {q.name for q in self.queues}
        kinds = [kind for kind, name in QUEUE_FOR_KIND.items() if name in served]
        if not kinds:
            return
        try:
            top_up(self.context.db(), self.context.redis, self.context.config, kinds)
        except (psycopg2.Error, RedisError) as e:
            log.warning("could not top up the queues (%s); the next job or sweep does", type(e).__name__)


log = logging.getLogger(__name__)

# Seconds a job may go on after a SIGTERM before it is interrupted. Platforms send SIGKILL
# 30 s after SIGTERM (Heroku, Render, Kubernetes' default) and `falback up` after 20 s:
# the job must have handed its row back before that.
SHUTDOWN_GRACE_SECONDS = 10
# Every job's retry (and a paused destination's wait) is a scheduled RQ job, enqueued by
# the one worker holding the scheduler lock. When that worker dies, its lock lives on for
# 61 s and RQ's other workers try to take it over only at their maintenance pass, every
# 10 minutes by default (an idle one when its 405 s wait for a job ends): meanwhile no
# retry runs, and the sweep leaves them alone (their jobs exist). A pass every 30 s
# brings a new scheduler up within about 90 s of the old one's death.
SCHEDULER_TAKEOVER_SECONDS = 30
# Worker -> horse: interrupt the job now (a second SIGTERM to the worker).
HAND_BACK_NOW = signal.SIGRTMIN


class FalbackWorker(_GivesContext, Worker):
    """Forks a work horse per job (`falback worker --fork`): a job that crashes the
    interpreter or leaks takes only its horse, at a fork per file.

    The horse leads a process group of its own, so a SIGTERM to the worker's group does
    not reach it: the worker passes it on (warm shutdown), and a second one as
    HAND_BACK_NOW (cold shutdown) before RQ's SIGKILL."""

    def setup_work_horse_signals(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _finish_within_grace)
        signal.signal(HAND_BACK_NOW, _hand_back)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.horse_pid:
            log.info("shutting down: the current job has %ds to finish", SHUTDOWN_GRACE_SECONDS)
            _signal(self.horse_pid, signal.SIGTERM)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.horse_pid:
            _signal(self.horse_pid, HAND_BACK_NOW)
            deadline = time.monotonic() + 5  # recording the retry takes a round trip or two
            while time.monotonic() < deadline and _alive(self.horse_pid):
                time.sleep(0.05)
        super().request_force_stop(signum, frame)


_interrupted = False


def _finish_within_grace(_signum: int, _frame: FrameType | None) -> None:
    """In the horse: the job goes on, and is interrupted if still running after the grace.
    SIGALRM is the job-timeout alarm RQ set; the shutdown's deadline replaces it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one grace, however many SIGTERMs
    signal.signal(signal.SIGALRM, _hand_back)
    signal.alarm(SHUTDOWN_GRACE_SECONDS)


def _hand_back(signum: int, _frame: FrameType | None) -> None:
    """In the horse: interrupt the job once; the backup job records a retry for its row
    (the exception is a BaseException, so only its shutdown path catches it)."""
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    signal.alarm(0)
    raise ShutDownImminentException(  # type: ignore[no-untyped-call]
        f"worker shutting down ({signal.Signals(signum).name})", {}
    )


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return finished == 0


class InProcessWorker(_GivesContext, SimpleWorker):
    """Runs jobs in this process, reusing its connections (`falback worker`, tests). RQ
    still ends a job at its timeout (SIGALRM, as in a work horse); a copy streams in
    chunks, so memory does not grow with files (tests/test_drive_crash.py measures it).

    A SIGTERM mid-job starts the grace (the job-timeout alarm gives way to the shutdown's
    deadline); a second one is RQ's cold shutdown, whose SystemExit, raised inside the
    job, makes the backup job record a retry before the process ends."""

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()  # type: ignore[no-untyped-call]
        if self.get_state() == WorkerStatus.BUSY:
            log.info("shutting down: the current job has %ds to finish", SHUTDOWN_GRACE_SECONDS)
            signal.signal(signal.SIGALRM, _hand_back)
            signal.alarm(SHUTDOWN_GRACE_SECONDS)


def make_worker(
    config: Config, redis: Redis, queues: list[Queue], *, fork: bool = False
) -> FalbackWorker | InProcessWorker:
    worker_class = FalbackWorker if fork else InProcessWorker
    worker = worker_class(
        queues,
        connection=redis,
        job_class=ContextJob,
        maintenance_interval=SCHEDULER_TAKEOVER_SECONDS,
        worker_ttl=SCHEDULER_TAKEOVER_SECONDS + 15,  # an idle worker wakes this often
    )
    worker.context = WorkerContext(config, redis)
    return worker

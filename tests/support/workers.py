"""Running the queued RQ jobs: in this process (fast; what most tests need), or as a real
`falback worker` process for the tests that kill, signal or measure one."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis

from core.config import Config
from jobs.queues import worker_queues
from jobs.worker import make_worker
from tests.support.processes import command_env, falback

# Whose INFO lines a worker's log has; in process they reach the test's caplog.
_WORKER_LOGGERS = ("jobs", "db", "rq")


def run_worker(config: Config, *, with_scheduler: bool = True) -> bool:
    """Run every job that is due in this process, as `falback worker --burst` does (its
    scheduler first moves retries that are due back onto their queues); return whether
    any job ran. Jobs log to caplog, at INFO, rather than to a process's output."""
    assert config.redis_url
    redis = Redis.from_url(config.redis_url)
    worker = make_worker(config, redis, worker_queues(redis), fork=False)
    try:
        with _rq_signal_handlers_undone(), _logging_at_info(_WORKER_LOGGERS):
            return bool(worker.work(burst=True, with_scheduler=with_scheduler))
    finally:
        worker.context.close()
        redis.close()


@contextmanager
def _rq_signal_handlers_undone() -> Iterator[None]:
    """RQ's work loop installs SIGINT/SIGTERM handlers for its warm shutdown and leaves
    them in place: put pytest's back, so that Ctrl-C still stops the test run."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextmanager
def _logging_at_info(names: tuple[str, ...]) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_worker_process(config: Config, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A real `falback worker --burst` process, run until the queues are empty."""
    result = falback(config, "worker", "--burst", timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def worker_process(config: Config, *options: str) -> subprocess.Popen[str]:
    """A real `falback worker --burst` in its own process group (so it can be killed whole);
    `options` such as --fork."""
    return subprocess.Popen(
        [sys.executable, "-m", "falback", "worker", "--burst", *options],
        env=command_env(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def children(pid: int) -> list[int]:
    """A live process's children (a forking worker's work horse)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def peak_rss(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def kill_worker(pid: int) -> None:
    """SIGKILL the worker, which runs its job in process, and a work horse if it has one
    (`--fork`: RQ puts the horse in a session of its own), the worker first so that it
    cannot react to the horse's death."""
    horses = children(pid)
    os.kill(pid, signal.SIGKILL)
    for horse in horses:
        os.kill(horse, signal.SIGKILL)


def worker_peak(config: Config) -> tuple[int, float, str]:
    """Run a `falback worker --burst` process to the end (jobs in process, as in
    production), sampling its peak RSS (VmHWM, which only rises) as it runs; return the
    last peak read, the seconds it took and its output. Fails if it does not exit 0."""
    worker = worker_process(config)
    peak = 0
    started = time.monotonic()
    while worker.poll() is None:
        peak = max(peak, peak_rss(worker.pid) or 0)
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    output = worker.stdout.read() if worker.stdout else ""
    assert worker.returncode == 0, output[-3000:]
    return peak, elapsed, output

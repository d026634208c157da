"""Benchmark: time to safe, one 4 MiB video through an idle service, vs curl.

The chaos run's stack (bench/chaos_stack.py): embedded Postgres (durable) and Redis,
migrations, the stand-in CDN (a thread of this process), the Drive emulator, a JWKS
stand-in that signs fal's webhooks, and the Procfile's lines as their own processes:
`web` (gunicorn with gunicorn.conf.py), one `worker` and `relay`. Per destination (the
local folder, FALBACK_BACKUP_DIR; then the Drive emulator, `--destinations`), those three
are (re)started with FALBACK_DESTINATIONS set to it and waited for until idle; then,
`--files` times, one at a time, interleaved file by file (the order alternating):

- falback: a fresh 4 MiB video on the CDN, fal's signed webhook for it (a new connection,
  as fal makes), timed from sending it until its ledger row reads `done` (one Postgres
  connection, polled every `--poll-ms`);
- curl: `curl -s -o /dev/null` of another fresh file of the same size from the same CDN.

Prints the machine, p50/p90/max of both and the ratio p50(falback)/p50(curl), then where
falback's time goes, from the ledger's timestamps and the processes' JSON log lines (one
machine, one clock): the webhook's insert and dispatch, its answer, the worker's start
and claim, the copy, the record, and this script seeing it.

    .venv/bin/python bench/time_to_safe.py [--files 30] [--destinations local,drive] [--poll-ms 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg2
import psycopg2.extensions
from redis import Redis
from rq import worker_registration

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos_load import Load, SourceFile, Traffic, delivery_for  # noqa: E402
from chaos_stack import Stack  # noqa: E402

from jobs.queues import QUEUE_NAMES  # noqa: E402

SIZE = 4 * 1024 * 1024
PROCESSES = ("web", "worker.1", "relay")
# The moments of one file, in seconds after its webhook was sent: (name, where from, what).
STAGES = (
    ("inserted", "row", "the webhook's transaction began: its ledger row's created_at"),
    ("dispatched", "row", "the row was claimed for its queue: queued_at"),
    ("answered", "answer", "the webhook's 200 reached the sender"),
    ("started", "log", "the worker took the job off its queue (RQ's line)"),
    ("claimed", "log", "the job claimed the row (its `claimed` line)"),
    ("verified", "log", "the copy was written and checked (`copy verified`)"),
    ("recorded", "log", "the row was committed `done` (`done:`)"),
    ("seen", "", "this script's poll read `done`"),
)
# The worker's log lines that mark those moments, by the ledger id in them.
LOG_LINES = {
    "started": re.compile(r": backup-\w+: backup ledger row (\d+) \("),
    "claimed": re.compile(r"^ledger (\d+) job \S+: claimed, "),
    "verified": re.compile(r"^ledger (\d+) job \S+: copy verified at "),
    "recorded": re.compile(r"^ledger (\d+) job \S+: done: "),
}


@dataclass
class Sample:
    ledger_id: int
    sent: float  # time.time() just before the webhook went out
    answered: float
    seen: float
    row: dict[str, float]  # "inserted", "dispatched": the ledger's created_at, queued_at


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--destinations", default="local,drive", help="one row each, in this order")
    parser.add_argument("--poll-ms", type=float, default=2.0)
    parser.add_argument("--keep", type=Path, help="keep the data (and processes.log) in this folder")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="falback-tts-"))
    print(machine(), flush=True)
    settings = {"LOG_FORMAT": "json", "FALBACK_BACKUP_DIR": str(data_dir / "backups")}
    stack = Stack(data_dir, settings)
    try:
        run(stack, args.files, args.destinations.split(","), args.poll_ms / 1000)
    finally:
        stack.close()
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()};"
        f" load average {load} (1, 5, 15 min)"
    )


def run(stack: Stack, files: int, destinations: list[str], poll: float) -> None:
    watch = psycopg2.connect(stack.database_url)
    watch.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    sender = Sender(stack)
    try:
        for destination in destinations:
            start_idle(stack, watch, destination)
            for _ in range(3):  # warm-up: each gunicorn worker loads the keys, the worker its imports
                sender.time_to_safe(watch, poll)
            ours: list[Sample] = []
            curls: list[float] = []
            for i in range(files):
                if i % 2:
                    curls.append(sender.curl())
                ours.append(sender.time_to_safe(watch, poll))
                if not i % 2:
                    curls.append(sender.curl())
            report(destination, ours, curls, worker_log(stack.data_dir / "processes.log"))
    finally:
        watch.close()


def start_idle(stack: Stack, watch: psycopg2.extensions.connection, destination: str) -> None:
    """(Re)start web, one worker and relay for `destination`; return once all three are
    up and the worker is waiting on its queues."""
    for name in PROCESSES:
        if name in stack.processes and stack.processes[name].poll() is None:
            stack.stop(name)
    redis = Redis.from_url(stack.redis_url)
    for name in PROCESSES:
        stack.start(name, {"FALBACK_DESTINATIONS": destination})
    deadline = time.monotonic() + 60
    key = worker_registration.WORKERS_BY_QUEUE_KEY % QUEUE_NAMES[-1]
    with watch.cursor() as cur:
        while True:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'falback-relay-listen'"
            )
            row = cur.fetchone()
            if row and row[0] and redis.scard(key) >= 1 and stack.healthy():
                break
            if stack.exited() or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not come up: exited {stack.exited()}")
            time.sleep(0.1)
    redis.close()
    time.sleep(1.0)  # the worker's first top-up and the relay's first sweep are over


class Sender:
    """Fresh files on the CDN, fal's webhook for one (through the chaos run's sender: it
    signs with the stack's key and posts on a new connection) and curl for the other."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.traffic = Traffic(stack, Load([], [], [], [], 0.0), 0.0, random.Random(0))
        self.n = 0

    def fresh(self, name: str) -> str:
        self.n += 1
        return self.stack.cdn.add(f"/files/b/tts/{self.n:05d}{name}", SIZE, content_type="video/mp4")

    def curl(self) -> float:
        url = self.fresh(".bin")
        start = time.perf_counter()
        subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)
        return time.perf_counter() - start

    def time_to_safe(self, watch: psycopg2.extensions.connection, poll: float) -> Sample:
        url = self.fresh(".mp4")
        delivery = delivery_for(self.n, [SourceFile(url, "regular", SIZE, "webhook")])
        sent = time.time()
        status = self.traffic.post(delivery)
        answered = time.time()
        if status != 200:
            raise RuntimeError(f"webhook answered {status}")
        with watch.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT id, status, extract(epoch FROM created_at), extract(epoch FROM queued_at)"
                    " FROM ledger WHERE source_url = %s",
                    (url,),
                )
                row = cur.fetchone()
                if row and row[1] == "done":
                    seen = time.time()
                    break
                if row and row[1] in ("failed", "gone") or time.time() - sent > 120:
                    raise RuntimeError(f"{url}: {row}")
                time.sleep(poll)
        time.sleep(0.3)  # idle again: the worker's top-up after the job is over
        times = {"inserted": float(row[2]), "dispatched": float(row[3])}
        return Sample(int(row[0]), sent, answered, seen, times)


def worker_log(path: Path) -> dict[tuple[int, str], float]:
    """{(ledger id, moment): when it was logged}, from the processes' JSON lines."""
    found: dict[tuple[int, str], float] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        for moment, pattern in LOG_LINES.items():
            match = pattern.search(str(entry.get("message", "")))
            if match:
                found.setdefault(
                    (int(match.group(1)), moment), datetime.fromisoformat(entry["time"]).timestamp()
                )
    return found


def cuts(values: list[float]) -> tuple[float, float, float]:
    """p50, p90 and max."""
    tenths = statistics.quantiles(values, n=10, method="inclusive")
    return statistics.median(values), tenths[8], max(values)


def report(
    destination: str, ours: list[Sample], curls: list[float], logged: dict[tuple[int, str], float]
) -> None:
    safe = [s.seen - s.sent for s in ours]
    print(f"\n{destination}: {len(ours)} files of {SIZE // (1024 * 1024)} MiB, one at a time")
    for name, values in ((f"falback -> {destination}", safe), ("curl -o /dev/null", curls)):
        p50, p90, top = cuts(values)
        print(f"  {name:<22} p50 {p50 * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms  max {top * 1000:7.1f} ms")
    print(f"  ratio p50(falback) / p50(curl): {statistics.median(safe) / statistics.median(curls):.2f}")
    print("  where the time goes: each moment in ms after the webhook was sent, p50 and max; p50 of the step")
    previous: list[float] = []
    for stage, source, meaning in STAGES:
        moments = [_moment(stage, source, s, logged) for s in ours]
        known = [m for m in moments if m is not None]
        if len(known) < len(moments):
            print(f"    {stage:<11} ({len(moments) - len(known)} not found)  {meaning}")
            previous = []
            continue
        # The answer is beside the chain (the worker does not wait for it): no step to it.
        chained = source != "answer"
        step = ""
        if chained and previous:
            step = f"+{statistics.median(b - a for a, b in zip(previous, known, strict=True)) * 1000:.1f}"
        at = f"{statistics.median(known) * 1000:7.1f} {max(known) * 1000:7.1f}"
        print(f"    {stage:<11} {at} {step:>7}  {meaning}")
        if chained:
            previous = known
    slow = [s for s in ours if s.seen - s.sent > 1.0]
    if slow:
        print(f"  {len(slow)} file(s) over 1 s: ledger {', '.join(str(s.ledger_id) for s in slow)}")


def _moment(stage: str, source: str, s: Sample, logged: dict[tuple[int, str], float]) -> float | None:
    if source == "row":
        at: float | None = s.row[stage]
    elif source == "log":
        at = logged.get((s.ledger_id, stage))
    else:
        at = s.answered if source == "answer" else s.seen
    return None if at is None else at - s.sent


if __name__ == "__main__":
    main()

"""The faults of a chaos run, on a schedule drawn from the run's seeded RNG.

Each fault records what it showed (how long a SIGTERMed worker took to exit, whether it
left a row leased, how long the queues took to come back after Redis lost its data, how
many webhooks got a 503 while Postgres was down ...), for the report.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg2
import redis
from chaos_load import Load
from chaos_stack import Stack
from chaos_stack import horses as horses_of

# Every kind the run injects; `--quick` and a full run both inject each at least once.
KINDS = (
    "kill -9 worker mid-upload",
    "SIGTERM worker mid-upload",
    "SIGTERM web (gunicorn)",
    "restart Redis",
    "wipe Redis",
    "restart Postgres",
    "stop relay",
    "Drive 5xx",
    "Drive 429",
    "Drive dropped connection",
    "Drive daily cap",
    "sources expire mid-run",
)
ONCE = {"wipe Redis", "sources expire mid-run"}


@dataclass
class Fault:
    at: float  # seconds into the run
    kind: str
    result: str = ""
    started: float = 0.0


@dataclass
class FaultRunner:
    stack: Stack
    load: Load
    faults: list[Fault]
    clock: Callable[[], float]
    stop: threading.Event = field(default_factory=threading.Event)
    recovery: dict[str, float] = field(default_factory=dict)

    def run(self) -> None:
        for fault in sorted(self.faults, key=lambda f: f.at):
            if self.stop.wait(max(fault.at - self.clock(), 0)):
                return
            fault.started = self.clock()
            try:
                fault.result = self._inject(fault.kind)
            except Exception as e:  # noqa: BLE001 - one failed injection must not end the run
                fault.result = f"injection failed: {type(e).__name__}: {e}"

    def _inject(self, kind: str) -> str:
        s = self.stack
        if kind == "kill -9 worker mid-upload":
            name = self._busy_worker()
            leased = _leased_by(s.database_url, _job_pids(s.processes[name].pid))
            s.kill_hard(name)
            time.sleep(1.0)
            s.start(name)
            return f"{name} (and a work horse, if any) killed holding {leased} row(s); restarted"
        if kind == "SIGTERM worker mid-upload":
            return self._sigterm_worker()
        if kind == "SIGTERM web (gunicorn)":
            took = s.stop("web", timeout=30)
            s.start("web")
            return f"gunicorn exited {took:.1f}s after SIGTERM; restarted"
        if kind == "restart Redis":
            s.restart_redis()
            return "Redis stopped and started again (data kept: append-only file)"
        if kind == "wipe Redis":
            return self._wipe_redis()
        if kind == "restart Postgres":
            s.postgres.pause()
            try:
                time.sleep(4.0)
            finally:
                s.postgres.resume()
            return "Postgres down 4s (fast shutdown), then started again"
        if kind == "stop relay":
            s.stop("relay")
            time.sleep(6.0)
            s.start("relay")
            return "relay stopped for 6s, then started again (it sweeps on start)"
        drive = {
            "Drive 5xx": ("server_error", 4),
            "Drive 429": ("too_many_requests", 4),
            "Drive dropped connection": ("drop_connection", 3),
            "Drive daily cap": ("upload_limit", 1),
        }
        if kind in drive:
            fault_kind, count = drive[kind]
            # Files up to 5 MB go up in one multipart request, larger ones in session chunks.
            on = ("initiate", "multipart") if fault_kind == "upload_limit" else ("chunk", "multipart")
            s.drive.faults.add(fault_kind, count, on=on)
            return f"{count} Drive request(s) answered {fault_kind}"
        if kind == "sources expire mid-run":
            expiring = [f for f in self.load.files if f.expires == "mid-run"]
            for f in expiring:
                s.cdn.expire(f.url)
            return f"{len(expiring)} sources past fal's window now answer 404"
        raise AssertionError(kind)

    def _busy_worker(self, wait: float = 15.0) -> str:
        """A worker that holds a ledger row (a copy, not a sweep) right now, in process or
        in its work horse."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for name, process in list(self.stack.processes.items()):
                if not name.startswith("worker") or process.poll() is not None:
                    continue
                if _leased_by(self.stack.database_url, _job_pids(process.pid)):
                    return name
            time.sleep(0.05)
        return "worker.1"  # no copy under way: the fault still hits a worker, between jobs

    def _sigterm_worker(self) -> str:
        """SIGTERM a worker mid-upload: it must finish the file or hand the row back, and
        exit within the bound, leaving no row leased to a process that is gone."""
        s = self.stack
        name = self._busy_worker()
        pids = _job_pids(s.processes[name].pid)
        busy = _leased_by(s.database_url, pids) > 0
        took = s.stop(name, timeout=60)
        s.start(name)
        leased = _leased_by(s.database_url, pids)
        return (
            f"{name} exited {took:.1f}s after SIGTERM"
            f"{' mid-job' if busy else ' (idle)'}; rows left leased to it: {leased}"
        )

    def _wipe_redis(self) -> str:
        """FLUSHALL and restart, then time until every unfinished row has a job again (or
        is finished): how long the sweep takes to rebuild the queues from Postgres."""
        s = self.stack
        waiting = _unfinished(s.database_url)
        wiped = time.monotonic()
        s.restart_redis(wipe=True)
        thread = threading.Thread(target=self._time_recovery, args=(waiting, wiped), daemon=True)
        thread.start()
        return f"Redis lost every key ({len(waiting)} unfinished rows at that moment) and restarted"

    def _time_recovery(self, waiting: set[int], wiped: float) -> None:
        client = redis.Redis.from_url(self.stack.redis_url)
        while waiting and not self.stop.is_set():
            try:
                finished = _finished(self.stack.database_url, waiting)
                with client.pipeline() as pipe:
                    for ledger_id in sorted(waiting):
                        pipe.exists(f"rq:job:backup-{ledger_id}")
                    queued = {i for i, e in zip(sorted(waiting), pipe.execute(), strict=True) if e}
                waiting -= finished | queued
            except (psycopg2.Error, redis.RedisError):
                pass
            time.sleep(0.25)
        if not waiting:
            self.recovery["wipe Redis"] = time.monotonic() - wiped
        client.close()


def schedule(rng: random.Random, window: float, repeats: int) -> list[Fault]:
    """Each kind at a random moment in the window (`repeats` times, but the once-only
    kinds once)."""
    faults = []
    for kind in KINDS:
        for n in range(1 if kind in ONCE else repeats):
            # The first kill -9 comes early: its row waits out a lease (job timeout + 60 s).
            end = window * 0.3 if kind.startswith("kill -9") and n == 0 else window
            faults.append(Fault(rng.uniform(3.0, end), kind))
    return faults


def _job_pids(worker_pid: int) -> list[int]:
    """Where a worker runs its jobs: its work horse (`--fork`), else the worker itself."""
    return horses_of(worker_pid) or [worker_pid]


def _leased_by(database_url: str, pids: list[int]) -> int:
    if not pids:
        return 0
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ledger"
            " WHERE status = 'copying' AND split_part(claimed_by, ':', 2) = ANY(%s)",
            ([str(p) for p in pids],),
        )
        row = cur.fetchone()
    conn.close()
    return int(row[0]) if row else 0


def _unfinished(database_url: str) -> set[int]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM ledger WHERE status IN ('pending', 'queued', 'retrying')")
        ids = {int(r[0]) for r in cur.fetchall()}
    conn.close()
    return ids


def _finished(database_url: str, ids: set[int]) -> set[int]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM ledger WHERE id = ANY(%s) AND status IN ('done', 'failed', 'gone', 'copying')",
            (sorted(ids),),
        )
        done = {int(r[0]) for r in cur.fetchall()}
    conn.close()
    return done

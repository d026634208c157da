"""Benchmark: one host's workers vs two hosts' workers draining the same backlog.

Starts one embedded Postgres and one embedded Redis in a temporary folder and the
stand-in CDN in this process, serving N small images, each sent slowly (a pause between
64 KiB chunks: a copy waits on the network, as one from fal's CDN does, rather than on
the CPU). Then, on a fresh database, Redis and destination folder each time:

- run A: "host A" alone, K `falback worker` processes;
- run B: "host A" and "host B" together, K workers each;

each run timed from the backfill of the N files (one INSERT ... SELECT and a top-up, the
workers started and idle) until every ledger row is `done` in the local folder.

A host is a process group of its own with a hostname of its own: the group's leader runs
in a new UTS namespace (`unshare --uts --fork`) and sets its hostname there, so every
worker's `socket.gethostname()`, and with it the ledger's claim owner
(`<hostname>:<pid>:<job>`) and RQ's worker registry, name the host. Where `unshare` is
refused, the groups share the machine's hostname and only differ by `HOSTNAME` and
process group (the script says so).

Checks, per run: each source fetched once from the CDN, each ledger row claimed once
(the workers' `claimed` log lines) with one attempt and one recorded copy, as many files
in the destination folder as ledger rows; and which hosts took part (claims in the logs,
claim owners seen in the ledger while it ran, RQ's worker registry). Exits 1 on any
duplicate or missing copy.

    .venv/bin/python bench/two_hosts.py [--files 200] [--workers 2] [--size 196608] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psycopg2
from redis import Redis
from rq import Worker, worker_registration

from core.config import Config
from db.connection import Connection, connection, fetch_all
from db.migrate import apply_sample_schema, migrate
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from devkit.fakecdn import FakeCdn
from jobs.backfill import backfill
from jobs.queues import QUEUE_NAMES

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ("bench-host-a", "bench-host-b")


def unshare_works() -> bool:
    """Whether this machine lets us give a process group a hostname of its own."""
    if shutil.which("unshare") is None:
        return False
    probe = "import socket; socket.sethostname('falback-probe')"
    return (
        subprocess.run(
            ["unshare", "--uts", "--fork", sys.executable, "-c", probe], capture_output=True
        ).returncode
        == 0
    )


# --- one host: the leader of a process group, K workers under it ---------------------


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The leader outlives its workers: a SIGTERM to the group stops them, and it waits.
    (A handler, not SIG_IGN, which the workers would inherit across exec.)"""


def run_host(name: str, workers: int, log_dir: Path, set_hostname: bool) -> int:
    """Inside the host's group: name the host, run its workers, wait for all of them."""
    if set_hostname:
        socket.sethostname(name)
    signal.signal(signal.SIGTERM, _ignore)
    signal.signal(signal.SIGINT, _ignore)
    env = {**os.environ, "HOSTNAME": name}
    procs = []
    for i in range(workers):
        with (log_dir / f"{name}-{i}.log").open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "falback", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            )
    return max(p.wait() for p in procs)


@dataclass
class Host:
    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 30) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def start_host(name: str, workers: int, env: dict[str, str], log_dir: Path, namespaced: bool) -> Host:
    inner = [sys.executable, str(Path(__file__).resolve()), "--host", name, "--workers", str(workers)]
    inner += ["--log-dir", str(log_dir)] + (["--set-hostname"] if namespaced else [])
    argv = ["unshare", "--uts", "--fork", *inner] if namespaced else inner
    return Host(name, subprocess.Popen(argv, env=env, start_new_session=True))


# --- the benchmark ---------------------------------------------------------------------


@dataclass
class Run:
    label: str
    seconds: float = 0.0
    rows: int = 0
    files_on_disk: int = 0
    claims: dict[str, Counter[int]] = field(default_factory=dict)  # host -> ledger id -> claims
    owners_seen: dict[int, str] = field(default_factory=dict)  # ledger id -> claim owner's host, polled
    registry: Counter[str] = field(default_factory=Counter)  # RQ workers per hostname
    fetches: Counter[int] = field(default_factory=Counter)  # GETs per source -> how many sources
    extra_attempts: int = 0
    copies_per_row: Counter[int] = field(default_factory=Counter)

    def duplicates(self) -> list[str]:
        problems = []
        claimed = Counter[int]()
        for per_host in self.claims.values():
            claimed.update(per_host)
        if twice := [i for i, n in claimed.items() if n > 1]:
            problems.append(f"{len(twice)} ledger rows claimed more than once: {sorted(twice)[:10]}")
        if len(claimed) != self.rows:
            problems.append(f"{len(claimed)} rows claimed in the logs, {self.rows} in the ledger")
        if set(self.fetches) != {1}:
            problems.append(f"sources by number of GETs: {dict(self.fetches)}")
        if self.extra_attempts:
            problems.append(f"{self.extra_attempts} rows took more than one attempt")
        if set(self.copies_per_row) != {1}:
            problems.append(f"rows by number of recorded copies: {dict(self.copies_per_row)}")
        if self.files_on_disk != self.rows:
            problems.append(f"{self.files_on_disk} files in the destination, {self.rows} ledger rows")
        return problems


def seed(url: str, cdn: FakeCdn, run: str, files: int, size: int, delay: float) -> list[str]:
    apply_sample_schema(url)
    migrate(url)
    paths = []
    with connection(url) as conn, conn.cursor() as cur:
        for n in range(files):
            path = f"/files/b/{run}/image-{n}.png"
            cdn.add(path, size, content_type="image/png", slow_delay=delay)
            paths.append(path)
            cur.execute(
                "INSERT INTO gen_images (generation_model, image_url, file_size, created_at)"
                " VALUES (%s, %s, %s, now() - make_interval(mins => %s))",
                ("fal-ai/flux/dev", cdn.base_url + path, size, 10 + n),
            )
    return paths


def scalar(conn: Connection, sql: str) -> int:
    with conn.cursor() as cur:
        cur.execute(sql)
        n = int(fetch_all(cur)[0]["n"])
    conn.commit()
    return n


def owners_now(conn: Connection) -> dict[int, str]:
    """{ledger id: the host in its claim owner} for the rows being copied right now."""
    with conn.cursor() as cur:
        cur.execute("SELECT id, claimed_by FROM ledger WHERE status = 'copying' AND claimed_by IS NOT NULL")
        owners = {int(r["id"]): str(r["claimed_by"]).split(":")[0] for r in fetch_all(cur)}
    conn.commit()
    return owners


def read_claims(log_dir: Path, host: str) -> Counter[int]:
    claims = Counter[int]()
    for log in log_dir.glob(f"{host}-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and ": claimed, attempt " in str(record.get("message", "")):
                claims[int(record["ledger_id"])] += 1
    return claims


def one_run(
    label: str, hosts: tuple[str, ...], args: argparse.Namespace, base: Config, admin_url: str, cdn: FakeCdn
) -> Run:
    root = base.data_dir.parent
    database = f"bench_{label.lower()}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {database}")
    admin.close()
    url = admin_url.replace("@/postgres?", f"@/{database}?")
    paths = seed(url, cdn, database, args.files, args.size, args.delay)
    config = Config(
        database_url=url,
        redis_url=base.redis_url,
        data_dir=root / f"data-{label}",
        backup_dir=root / f"backups-{label}",
        source_hosts=base.source_hosts,
        allow_loopback_sources=True,
        queue_window_per_worker=base.queue_window_per_worker,
        max_backfill_limit=max(args.files, 1000),
        log_level="INFO",
        log_format="json",
    )
    assert config.redis_url
    redis = Redis.from_url(config.redis_url)
    redis.flushall()
    log_dir = root / f"logs-{label}"
    log_dir.mkdir()
    env = {**os.environ, **config.as_env(), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    run = Run(label)
    started = [start_host(h, args.workers, env, log_dir, args.namespaced) for h in hosts]
    try:
        key = worker_registration.WORKERS_BY_QUEUE_KEY % QUEUE_NAMES[-1]
        deadline = time.monotonic() + 60
        while redis.scard(key) < args.workers * len(hosts):  # every worker idle and listening
            if time.monotonic() > deadline or any(h.process.poll() is not None for h in started):
                raise RuntimeError(f"workers did not start; see {log_dir}")
            time.sleep(0.05)
        run.registry = Counter(w.hostname or "?" for w in Worker.all(connection=redis))
        with connection(url) as conn:
            start = time.perf_counter()
            backfill(config, conn, redis, "images", args.files)
            deadline = time.monotonic() + args.timeout
            while scalar(conn, "SELECT count(*) AS n FROM ledger WHERE status = 'done'") < args.files:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {label}: not drained within {args.timeout:.0f} s")
                run.owners_seen.update(owners_now(conn))
                time.sleep(0.05)
            run.seconds = time.perf_counter() - start
            run.rows = scalar(conn, "SELECT count(*) AS n FROM ledger")
            run.extra_attempts = scalar(conn, "SELECT count(*) AS n FROM ledger WHERE attempts <> 1")
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(c.ledger_id) AS n FROM ledger l LEFT JOIN copies c ON c.ledger_id = l.id"
                    " GROUP BY l.id"
                )
                run.copies_per_row = Counter(int(r["n"]) for r in fetch_all(cur))
    finally:
        for h in started:
            h.stop()
        redis.close()
    run.claims = {h: read_claims(log_dir, h) for h in hosts}
    run.fetches = Counter(len(cdn.file(p).requests) for p in paths)
    run.files_on_disk = sum(1 for p in config.backup_dir.rglob("*") if p.is_file())
    return run


def report(run: Run) -> None:
    per_host = ", ".join(f"{h} {sum(c.values())}" for h, c in run.claims.items())
    rate = run.rows / run.seconds
    print(f"run {run.label}: {run.rows} rows drained in {run.seconds:.2f} s ({rate:.1f} files/s)")
    print(f"  claims per host (worker logs): {per_host}")
    seen = Counter(run.owners_seen.values())
    print(f"  rows per claim owner's host, seen in the ledger while copying: {dict(seen)}")
    print(f"  RQ workers per hostname: {dict(run.registry)}")
    print(
        f"  files in the destination: {run.files_on_disk}; sources by GETs: {dict(run.fetches)};"
        f" rows by copies: {dict(run.copies_per_row)}; rows with more than one attempt: {run.extra_attempts}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per host")
    parser.add_argument("--size", type=int, default=3 * 64 * 1024, help="bytes per file")
    parser.add_argument("--delay", type=float, default=0.2, help="seconds between 64 KiB chunks of a source")
    parser.add_argument("--timeout", type=float, default=180, help="most seconds a run may take")
    parser.add_argument("--host", help=argparse.SUPPRESS)  # internal: run one host's workers
    parser.add_argument("--log-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--set-hostname", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        sys.exit(run_host(args.host, args.workers, args.log_dir, args.set_hostname))

    args.namespaced = unshare_works()
    root = Path(tempfile.mkdtemp(prefix="falback-bench-"))
    root.chmod(0o755)
    postgres, redis_server = EmbeddedPostgres(root / "pg"), EmbeddedRedis(root / "redis", persistent=False)
    cdn = FakeCdn().start()
    try:
        admin_url = postgres.start()
        base = Config(
            redis_url=redis_server.start(),
            data_dir=root / "data",
            source_hosts=("127.0.0.1",),
            allow_loopback_sources=True,
        )
        chunks = -(-args.size // (64 * 1024))
        print(
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores, {platform.machine()},"
            f" Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}"
        )
        print(
            f"{args.files} files of {args.size:,} bytes, {chunks} chunks each {args.delay} s apart"
            f" (at least {(chunks - 1) * args.delay:.2f} s waiting per copy); {args.workers} workers a host,"
            f" window {base.queue_window_per_worker} per worker"
        )
        if args.namespaced:
            print("hosts: a UTS namespace each (unshare --uts --fork), hostname " + " / ".join(HOSTS))
        else:
            print(
                f"hosts: no unshare here (missing or refused); both keep hostname {socket.gethostname()!r}"
                " and differ by HOSTNAME and process group only"
            )
        runs = [
            one_run(label, hosts, args, base, admin_url, cdn)
            for label, hosts in (("A", HOSTS[:1]), ("B", HOSTS))
        ]
    finally:
        cdn.stop()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
    for run in runs:
        report(run)
    a, b = runs
    print(f"ratio (A alone / A+B): {a.seconds / b.seconds:.2f}")
    problems = [f"run {r.label}: {p}" for r in runs for p in r.duplicates()]
    took_part = [h for h, c in b.claims.items() if c]
    if len(took_part) < len(HOSTS):
        problems.append(f"run B: only {took_part} claimed rows")
    for p in problems:
        print(f"PROBLEM {p}")
    print("duplicates: none" if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

"""Benchmark: the note's 507 files (sizes divided by --scale) through idle workers vs curl.

Starts embedded Postgres and Redis in a temporary folder and a stand-in CDN in this
process, seeds the user's 507 files as app rows (devkit.demo.seed_dataset: 12 upscaled
videos, 85 regular videos, 410 images), then, in the same run:

- baseline: `curl` fetching every file to /dev/null, 4 in parallel (xargs -P 4);
- fair baseline: the same `curl`s writing each file into a folder on the backups' file
  system, then `sync FILE` (fsync) and `md5sum FILE` (a read-back and a hash), as a
  falback copy is durable and checked before it counts;
- falback: 1, then 4 `falback worker` processes started and idle, then a backfill of all
  507 (one INSERT ... SELECT and a top-up: what a burst of webhooks amounts to once their
  rows are in), timed until every ledger row is `done` in the local folder.

Prints the times and both ratios, curl time / falback time (1.0: as fast as curl): one
against curl to /dev/null, one against the fair baseline.

    .venv/bin/python bench/burst.py [--scale 100] [--workers 1,4]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
from redis import Redis
from rq import worker_registration

from core.config import Config
from db.connection import Connection, connection, fetch_all
from db.migrate import apply_sample_schema, migrate
from devkit.demo import seed_dataset
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from devkit.fakecdn import FakeCdn
from jobs.backfill import backfill
from jobs.queues import QUEUE_NAMES

ROOT = Path(__file__).resolve().parent.parent


def done_count(conn: Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM ledger WHERE status = 'done'")
        n = int(fetch_all(cur)[0]["n"])
    conn.commit()
    return n


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a live process has used (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def run_falback(config: Config, url: str, workers: int, files: int) -> tuple[float, float, float]:
    """Seconds until every row is done, and the workers' user and system CPU seconds."""
    assert config.redis_url
    redis = Redis.from_url(config.redis_url)
    redis.flushall()
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE ledger CASCADE")
    shutil.rmtree(config.backup_dir, ignore_errors=True)
    env = {**os.environ, **config.as_env(), "PYTHONPATH": str(ROOT), "FALBACK_LOG_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "falback", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(workers)
    ]
    try:
        key = worker_registration.WORKERS_BY_QUEUE_KEY % QUEUE_NAMES[-1]
        while redis.scard(key) < workers:  # every worker idle and listening
            time.sleep(0.05)
        with connection(url) as conn:
            start = time.perf_counter()
            backfill(config, conn, redis, "all", files)
            before = [cpu_seconds(p.pid) for p in procs]
            while done_count(conn) < files:
                time.sleep(0.05)
            took = time.perf_counter() - start
            after = [cpu_seconds(p.pid) for p in procs]
            user = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
            system = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
            return took, user, system
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(30)
        redis.close()


def curl_to_files(urls: list[str], folder: Path) -> float:
    """Seconds for `curl` to write every file into `folder` (the backups' file system), 4 in
    parallel, each then fsynced (`sync FILE`) and read back through `md5sum`; the files
    are removed afterwards, so the page cache they took is free for the next run."""
    folder.mkdir()
    script = 'f="$0/${1##*/}" && curl -s --fail -o "$f" "$1" && sync "$f" && md5sum "$f" >/dev/null'
    start = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", "4", "-n", "1", "sh", "-c", script, str(folder)],
        input="\n".join(urls).encode(),
        check=True,
    )
    took = time.perf_counter() - start
    shutil.rmtree(folder)
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--workers", default="1,4")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="falback-bench-"))
    root.chmod(0o755)
    postgres, redis_server = EmbeddedPostgres(root / "pg"), EmbeddedRedis(root / "redis", persistent=False)
    cdn = FakeCdn().start()
    try:
        admin_url = postgres.start()
        redis_url = redis_server.start()
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bench")
        admin.close()
        url = admin_url.replace("@/postgres?", "@/bench?")
        apply_sample_schema(url)
        migrate(url)
        files = seed_dataset(url, cdn, scale=args.scale)
        total_bytes = sum(f.size for f in files)
        config = Config(
            database_url=url,
            redis_url=redis_url,
            data_dir=root / "data",
            backup_dir=root / "backups",
            source_hosts=("127.0.0.1",),
            allow_loopback_sources=True,
        )
        print(
            f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
            f" load {os.getloadavg()[0]:.1f}; {len(files)} files, {total_bytes / 1e6:,.1f} MB"
            f" (scale 1/{args.scale})"
        )
        with connection(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT url FROM falback_app_files")
            urls = [r["url"] for r in fetch_all(cur)]
        start = time.perf_counter()
        subprocess.run(
            ["xargs", "-P", "4", "-n", "1", "curl", "-s", "-o", "/dev/null"],
            input="\n".join(urls).encode(),
            check=True,
        )
        curl = time.perf_counter() - start
        print(f"baseline, curl 4 in parallel to /dev/null: {curl:.2f} s")
        fair = curl_to_files(urls, root / "curl")
        print(f"fair baseline, curl 4 in parallel to files, fsync, md5sum: {fair:.2f} s")
        for workers in (int(w) for w in args.workers.split(",")):
            took, user, system = run_falback(config, url, workers, len(files))
            print(
                f"falback, {workers} worker(s): {took:.2f} s -> ratio (curl / falback)"
                f" {curl / took:.2f} against /dev/null, {fair / took:.2f} against the fair baseline;"
                f" the workers' CPU: {user:.1f} s user, {system:.1f} s system"
            )
    finally:
        cdn.stop()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: Redis memory per queued file, with the backlog in Postgres.

Starts embedded Postgres and Redis in a temporary folder and, in the same run, measures
Redis's `used_memory` (INFO memory) before and after:

- baseline: the old model, one RQ job per known file (`jobs.queues.enqueue_batch` for
  --jobs files), and, for scale, the same number of bare ids pushed onto a Redis list;
- falback: a backlog of --small and then --large pending ledger rows (one INSERT ...
  SELECT generate_series each), dispatched by `jobs.dispatch.top_up` with --workers
  workers registered on the queue: Redis holds the window, whatever the backlog.

    .venv/bin/python bench/redis_memory.py [--small 10000] [--large 1000000] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import psycopg2
from redis import Redis
from rq import worker_registration

from core.config import Config
from db.connection import connection
from db.migrate import migrate
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from jobs.dispatch import top_up
from jobs.queues import QUEUE_FOR_KIND, enqueue_batch

QUEUE = QUEUE_FOR_KIND["regular"]


def used(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs for the one-job-per-file baseline")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="falback-bench-"))
    root.chmod(0o755)
    postgres, redis_server = EmbeddedPostgres(root / "pg"), EmbeddedRedis(root / "redis", persistent=False)
    try:
        admin_url = postgres.start()
        redis_url = redis_server.start()
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bench")
        url = admin_url.replace("@/postgres?", "@/bench?")
        migrate(url)
        config = Config(database_url=url, redis_url=redis_url)
        redis = Redis.from_url(redis_url)
        print(
            f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
            f" Postgres (pgserver), Redis {redis.info()['redis_version']}"
        )

        # Baseline: every file a job.
        redis.flushall()
        before = used(redis)
        enqueue_batch(redis, config, [(i, "regular") for i in range(1, args.jobs + 1)])
        per_job = (used(redis) - before) / args.jobs
        redis.flushall()
        before = used(redis)
        redis.rpush("ids", *range(1, args.jobs + 1))
        per_id = (used(redis) - before) / args.jobs
        redis.flushall()
        print(f"baseline, one RQ job per file ({args.jobs:,} jobs): {per_job:,.0f} bytes per file")
        print(f"  for scale, an id in a Redis list: {per_id:,.0f} bytes")

        # falback: the backlog in Postgres, a window in Redis.
        results = []
        made = 0
        with connection(url) as conn:
            for backlog in (args.small, args.large):
                with conn.cursor() as cur:
                    start = time.perf_counter()
                    cur.execute(
                        "INSERT INTO ledger (source_url, kind, expires_at, status)"
                        " SELECT 'https://v3b.fal.media/files/b/m/' || n || '.mp4', 'regular',"
                        "        now() + make_interval(secs => n), 'pending'"
                        " FROM generate_series(%s, %s) AS n",
                        (made + 1, backlog),
                    )
                    cur.execute("ANALYZE ledger")
                conn.commit()
                inserted = time.perf_counter() - start
                made = backlog
                redis.flushall()
                for n in range(args.workers):  # as RQ registers a worker on a queue
                    redis.sadd(worker_registration.WORKERS_BY_QUEUE_KEY % QUEUE, f"rq:worker:bench-{n}")
                before = used(redis)
                start = time.perf_counter()
                dispatched = top_up(conn, redis, config, ["regular"])
                took = time.perf_counter() - start
                delta = used(redis) - before
                results.append((backlog, len(dispatched), delta))
                print(
                    f"backlog {backlog:>9,} pending rows (made in {inserted:.1f} s):"
                    f" top-up {took * 1000:.0f} ms, {len(dispatched)} jobs in Redis,"
                    f" +{delta:,} bytes = {delta / backlog:.3f} bytes per backlog file"
                )
                # What a worker pays after each job: one finished, one top-up (warm).
                with conn.cursor() as cur:
                    cur.execute("UPDATE ledger SET status = 'done' WHERE id = %s", (dispatched[0][0],))
                conn.commit()
                start = time.perf_counter()
                top_up(conn, redis, config, ["regular"])
                print(f"  a worker's top-up after a job: {(time.perf_counter() - start) * 1000:.1f} ms")
                with conn.cursor() as cur:  # back to the backlog for the next size
                    cur.execute("UPDATE ledger SET status = 'pending' WHERE status IN ('queued', 'done')")
                conn.commit()
        (small, _, small_bytes), (large, _, large_bytes) = results
        print(f"ratio, Redis bytes at {large:,} vs {small:,} backlog: {large_bytes / small_bytes:.2f}")
        print(
            f"ratio, Redis bytes at {large:,} backlog vs one job per file:"
            f" {large_bytes / (per_job * large):.6f} ({large_bytes:,} vs {per_job * large:,.0f} bytes)"
        )
        admin.close()
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

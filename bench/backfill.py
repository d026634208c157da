"""Benchmark: backfill N app files against the bare INSERT ... SELECT it is built on.

Starts embedded Postgres and Redis in a temporary folder, fills gen_videos with N
upscaled videos, then, in the same run:

- baseline: the backfill's own statement alone (ledger rows from falback_app_files, most
  valuable and oldest first, as db/app_rows.backfill_from_app runs it), rolled back, then
  the ledger vacuumed;
- falback: `backfill --type upscale --limit N` through the same code path as the CLI and
  the HTTP endpoint (the rows, the app rows' backup_* columns, the dispatch of a window).

Prints both rates, their ratio, and the Redis jobs the backfill left (the window), for
each of --rounds rounds (each on a fresh copy of the filled database), then the median
ratio: the two are timed one after the other, so on a shared machine another process's
burst can land on either.

    PYTHONPATH=. .venv/bin/python bench/backfill.py [--rows 100000] [--rounds 3]

(PYTHONPATH=. so that a worktree's own code is measured, not the editable install's.)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg2
from redis import Redis

from core.config import Config
from db.app_rows import BARE_INSERT_FROM_APP
from db.connection import connection
from db.migrate import apply_sample_schema
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from jobs.backfill import backfill


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    # The bare statement and the backfill are timed one after the other: on a shared
    # machine another process's burst lands on one of them. Rounds show the spread.
    parser.add_argument("--rounds", type=int, default=3)
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
        apply_sample_schema(url)
        with connection(url) as conn, conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO gen_videos (generation_model, video_url, file_size,
                                        upscale_video_url, upscale_file_size, created_at)
                SELECT 'fal-ai/kling-video', 'https://v3b.fal.media/files/b/x/' || n || '.mp4', 4000000,
                       'https://v3b.fal.media/files/b/x/' || n || '_up.mp4', 300000000,
                       now() - make_interval(secs => n)
                FROM generate_series(1, %s) AS n
                """,
                (args.rows,),
            )
            cur.execute("ANALYZE")
        # Each round starts from a copy of the same filled database.
        redis = Redis.from_url(redis_url)
        print(
            f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
            f" Postgres (pgserver), Redis {redis.info()['redis_version']}"
        )
        print(f"rows: {args.rows}")
        ratios = []
        for n in range(1, args.rounds + 1):
            name = f"bench_{n}"
            admin.cursor().execute(f"CREATE DATABASE {name} TEMPLATE bench")
            redis.flushall()
            ratios.append(one_round(url.replace("@/bench?", f"@/{name}?"), redis_url, redis, args.rows, n))
            admin.cursor().execute(f"DROP DATABASE {name}")
        if len(ratios) > 1:
            print(f"ratio, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}")
        admin.close()
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def one_round(url: str, redis_url: str, redis: Redis, rows: int, n: int) -> float:
    """The bare statement (rolled back, the ledger vacuumed), then the backfill; print both
    and return the ratio of their rates."""
    config = Config(database_url=url, redis_url=redis_url, max_backfill_limit=rows)
    with connection(url) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        cur.execute(BARE_INSERT_FROM_APP, {"kinds": ["upscale"], "limit": rows, "days": 7})
        bare = time.perf_counter() - start
        assert cur.rowcount == rows, cur.rowcount
        conn.rollback()
    # The rolled-back rows would leave dead tuples and index entries for the backfill's
    # own INSERT to wade through: both start from the same clean table.
    admin_bench = psycopg2.connect(url)
    admin_bench.autocommit = True
    admin_bench.cursor().execute("VACUUM ANALYZE ledger")
    admin_bench.close()
    memory_before = redis.info("memory")["used_memory"]
    start = time.perf_counter()
    with connection(url) as conn:
        summary = backfill(config, conn, redis, "upscale", rows)
    total = time.perf_counter() - start
    assert summary.files == rows, summary
    queued = redis.llen("rq:queue:backup-upscale")
    print(f"round {n}, load {os.getloadavg()[0]:.2f}:")
    print(f"  baseline, the bare INSERT ... SELECT: {bare:.2f} s -> {rows / bare:,.0f} rows/s")
    print(f"  falback backfill: {total:.2f} s -> {rows / total:,.0f} rows/s")
    print(f"  ratio (falback / baseline rate): {bare / total:.2f}")
    print(
        f"  jobs in Redis afterwards: {queued} (the window), Redis memory"
        f" +{redis.info('memory')['used_memory'] - memory_before:,} bytes"
    )
    # Running it again must find nothing new.
    again_start = time.perf_counter()
    with connection(url) as conn:
        again = backfill(config, conn, redis, "upscale", rows)
    print(f"  second run: {again.files} added in {time.perf_counter() - again_start:.2f} s")
    return bare / total


if __name__ == "__main__":
    main()

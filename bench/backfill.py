"""Benchmark: backfill N app files against the bare INSERT ... SELECT it is built on.

Starts embedded Postgres and Redis in a temporary folder, fills gen_videos with N
upscaled videos, then, in the same run:

- baseline: the backfill's own statement alone (ledger rows from falback_app_files, most
  valuable and oldest first, as db/app_rows.insert_from_app runs it), rolled back, then
  the ledger vacuumed;
- falback: `backfill --type upscale --limit N` through the same code path as the CLI and
  the HTTP endpoint (the rows, the app rows' backup_* columns, the dispatch of a window).

Prints both rates, their ratio, and the Redis jobs the backfill left (the window).

    .venv/bin/python bench/backfill.py [--rows 100000]
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

from core.config import Config
from db.app_rows import BARE_INSERT_FROM_APP
from db.connection import connection
from db.migrate import apply_sample_schema
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from jobs.backfill import backfill


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
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
        config = Config(database_url=url, redis_url=redis_url, max_backfill_limit=args.rows)
        redis = Redis.from_url(redis_url)
        with connection(url) as conn, conn.cursor() as cur:
            start = time.perf_counter()
            cur.execute(BARE_INSERT_FROM_APP, {"kinds": ["upscale"], "limit": args.rows, "days": 7})
            bare = time.perf_counter() - start
            assert cur.rowcount == args.rows, cur.rowcount
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
            summary = backfill(config, conn, redis, "upscale", args.rows)
        total = time.perf_counter() - start
        assert summary.files == args.rows, summary
        queued = redis.llen("rq:queue:backup-upscale")
        print(
            f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()},"
            f" Postgres (pgserver), Redis {redis.info()['redis_version']}"
        )
        print(f"rows: {args.rows}")
        print(f"baseline, the bare INSERT ... SELECT: {bare:.2f} s -> {args.rows / bare:,.0f} rows/s")
        print(f"falback backfill: {total:.2f} s -> {args.rows / total:,.0f} rows/s")
        print(f"ratio (falback / baseline rate): {bare / total:.2f}")
        print(
            f"jobs in Redis afterwards: {queued} (the window), Redis memory"
            f" +{redis.info('memory')['used_memory'] - memory_before:,} bytes"
        )
        # Running it again must find nothing new.
        again_start = time.perf_counter()
        with connection(url) as conn:
            again = backfill(config, conn, redis, "upscale", args.rows)
        print(f"second run: {again.files} added in {time.perf_counter() - again_start:.2f} s")
        admin.close()
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

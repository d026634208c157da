"""The dispatcher: the backlog stays in Postgres, each backup queue holds a bounded window,
topped up after intake and after every job, by priority then time left, never twice."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from redis import Redis

from core.config import Config
from db.connection import Connection, connect, fetch_one
from jobs.backfill import backfill
from jobs.dispatch import top_up, window_sizes
from jobs.sweep import sweep
from jobs.worker import InProcessWorker
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_image, add_video, ledger_rows, query
from tests.support.workers import run_worker

IMAGES = "rq:queue:backup-images"


def statuses(conn: Connection) -> Counter[str]:
    return Counter(r["status"] for r in ledger_rows(conn))


def test_a_backlog_larger_than_the_window_drains_through_it(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 images, a window of 3 per worker: Redis never holds more than 3 jobs, the window
    is topped up as jobs finish, and every row ends done."""
    config = config.replace(queue_window_per_worker=3)
    for n in range(25):
        add_image(conn, cdn, n)
    summary = backfill(config, conn, redis, "images", 100)
    assert (summary.files, summary.dispatched) == (25, 3)
    assert statuses(conn) == {"pending": 22, "queued": 3}
    assert redis.llen(IMAGES) == 3

    seen: list[int] = []
    original = InProcessWorker.top_up

    def watched(self: InProcessWorker) -> None:
        original(self)
        seen.append(redis.llen(IMAGES))

    monkeypatch.setattr(InProcessWorker, "top_up", watched)
    run_worker(config)

    assert statuses(conn) == {"done": 25}
    assert len(seen) == 26, "a top-up when the worker starts and after each job"
    assert max(seen) <= 3, seen  # one worker: a window of 3
    assert seen[1:-3] == [3] * 22, "refilled after each job while the backlog lasts"


def test_priority_holds_across_the_whole_backlog(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """Images reach the backlog first, videos later: the videos still go before every image
    that was not already in the window; within a kind, the closest to expiry goes first."""
    for n in range(10):
        add_image(conn, cdn, n, age_days=1 + n * 0.1)  # the last added expires first
    backfill(config, conn, redis, "images", 100)
    first_window = {r["id"] for r in ledger_rows(conn) if r["status"] == "queued"}
    oldest = {r["id"] for r in query(conn, "SELECT id FROM ledger ORDER BY expires_at LIMIT 2")}
    assert first_window == oldest
    for n in range(3):
        add_video(conn, cdn, 100 + n)
    backfill(config, conn, redis, "regular", 100)

    run_worker(config)

    rows = ledger_rows(conn)
    assert {r["status"] for r in rows} == {"done"}
    videos = [r for r in rows if r["kind"] == "regular"]
    later_images = [r for r in rows if r["kind"] == "image" and r["id"] not in first_window]
    assert max(v["queued_at"] for v in videos) < min(i["queued_at"] for i in later_images)
    # One worker serves the queues in priority order: every video is copied first.
    assert [r["kind"] for r in sorted(rows, key=lambda r: r["done_at"])] == ["regular"] * 3 + ["image"] * 10
    # Images by time left: the closest to expiry copied first.
    images = sorted((r for r in rows if r["kind"] == "image"), key=lambda r: r["done_at"])
    assert [r["expires_at"] for r in images] == sorted(r["expires_at"] for r in images)


def test_two_dispatchers_never_dispatch_an_id_twice(
    config: Config, conn: Connection, redis: Redis, database_url: str, redis_url: str
) -> None:
    """Two dispatchers on their own connections top up at once, again and again, while a
    stand-in for the workers finishes queued rows: each row is dispatched exactly once and
    the window is never overfilled."""
    n = 600
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ledger (source_url, kind, expires_at)"
            " SELECT 'https://v3.fal.media/files/d/' || i || '.png', 'image', now() + interval '7 days'"
            " FROM generate_series(1, %s) AS i",
            (n,),
        )
    conn.commit()
    config = config.replace(queue_window_per_worker=7)
    window = window_sizes(redis, config)["image"]
    dispatched: list[list[int]] = [[], []]
    overfilled: list[int] = []
    stop = threading.Event()

    def dispatcher(slot: int) -> None:
        own, own_redis = connect(database_url), Redis.from_url(redis_url)
        try:
            while not stop.is_set():
                dispatched[slot] += [i for i, _ in top_up(own, own_redis, config, ["image"])]
        finally:
            own.close()
            own_redis.close()

    def finisher() -> None:
        own = connect(database_url)
        try:
            while not stop.is_set():
                with own.cursor() as cur:
                    cur.execute("SELECT count(*) AS n FROM ledger WHERE status = 'queued'")
                    queued = fetch_one(cur)["n"]  # type: ignore[index]
                    if queued > window:
                        overfilled.append(queued)
                    cur.execute(
                        "UPDATE ledger SET status = 'done' WHERE id IN"
                        " (SELECT id FROM ledger WHERE status = 'queued' LIMIT 3 FOR UPDATE SKIP LOCKED)"
                    )
                    cur.execute("SELECT count(*) AS n FROM ledger WHERE status <> 'done'")
                    left = fetch_one(cur)["n"]  # type: ignore[index]
                own.commit()
                if left == 0:
                    stop.set()
        finally:
            own.close()

    threads = [threading.Thread(target=dispatcher, args=(s,)) for s in (0, 1)]
    threads.append(threading.Thread(target=finisher))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()

    both = dispatched[0] + dispatched[1]
    assert dispatched[0] and dispatched[1], "both dispatchers took part"
    assert len(both) == len(set(both)) == n
    assert overfilled == []
    assert statuses(conn) == {"done": n}


def test_a_lost_window_is_dispatched_again_by_the_sweep(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """Redis flushed: the window's rows are 'queued' without jobs, which the sweep finds
    and enqueues again; the backlog behind them is untouched and then drains."""
    for n in range(8):
        add_image(conn, cdn, n)
    backfill(config, conn, redis, "images", 100)
    queued = sorted(r["id"] for r in ledger_rows(conn) if r["status"] == "queued")
    assert len(queued) == 2
    redis.flushall()

    counts = sweep(config, conn, redis)

    assert counts is not None and (counts.lost_queued, counts.dispatched) == (2, 0)
    jobs = sorted(j.decode() if isinstance(j, bytes) else j for j in redis.lrange(IMAGES, 0, -1))
    assert jobs == sorted(f"backup-{i}" for i in queued)
    run_worker(config)
    assert statuses(conn) == {"done": 8}


def test_redis_memory_does_not_follow_the_backlog(config: Config, conn: Connection, redis: Redis) -> None:
    """10 or 5,000 pending rows: the same number of jobs in Redis (the window)."""
    lengths = []
    for total in (10, 5000):
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ledger (source_url, kind, expires_at)"
                " SELECT 'https://v3.fal.media/files/m/' || %s || '-' || i || '.mp4', 'regular', now()"
                " FROM generate_series(1, %s) AS i",
                (total, total),
            )
        conn.commit()
        top_up(conn, redis, config)
        lengths.append(redis.llen("rq:queue:backup-regular"))
        redis.flushall()
        with conn.cursor() as cur:
            cur.execute("DELETE FROM ledger")
        conn.commit()
    assert lengths == [2, 2]

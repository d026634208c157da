"""The NOTIFY triggers and the relay: app rows become backup jobs within seconds, and
nothing is lost while the relay, Postgres or Redis is down."""

from __future__ import annotations

import json
import select
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import psycopg2.extras
import pytest
from redis import Redis
from rq.job import Job

from core.config import Config
from core.lifecycle import Backoff
from db.connection import Connection, connect, fetch_all, fetch_one
from db.migrate import migrate
from jobs.queues import job_id
from listener.relay import AppRow, parse_payload
from tests.fakes.cdn import FakeCdn
from tests.support.app_rows import backup_columns, copied_unlinked, copied_video, execute
from tests.support.processes import Background, background
from tests.support.rows import add_image, add_video, ledger_rows
from tests.support.servers import Servers
from tests.support.wait import wait_for
from tests.support.workers import run_worker


def statuses(conn: Connection) -> dict[int, str]:
    return {r["id"]: r["status"] for r in ledger_rows(conn)}


def all_queued(conn: Connection, n: int) -> bool:
    s = statuses(conn)
    return len(s) == n and set(s.values()) == {"queued"}


def start_relay(config: Config) -> Background:
    relay = Background(config, "relay")
    relay.wait_for_log("listening on channel falback_media")
    relay.wait_for_log("sweep: ")  # the catch-up sweep is done; what follows is live
    return relay


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    conn.cursor().execute("LISTEN falback_media")
    yield conn
    conn.close()


def notifications(listener: psycopg2.extensions.connection) -> list[dict[str, object]]:
    """Everything delivered until the connection has been quiet for 0.3 s."""
    listener.poll()
    while select.select([listener], [], [], 0.3)[0]:
        listener.poll()
    found = [json.loads(n.payload) for n in listener.notifies]
    listener.notifies.clear()
    return found


def test_triggers_notify_only_when_a_media_url_appears_or_changes(
    conn: Connection, listener: psycopg2.extensions.connection, database_url: str
) -> None:
    execute(conn, "INSERT INTO gen_videos (id, video_url) VALUES (1, 'https://fal.media/1.mp4')")
    execute(conn, "INSERT INTO gen_videos (id) VALUES (2)")  # no URL yet
    execute(conn, "INSERT INTO gen_images (id, image_url) VALUES (7, 'https://fal.media/7.png')")
    assert notifications(listener) == [{"table": "gen_videos", "id": 1}, {"table": "gen_images", "id": 7}]

    execute(conn, "UPDATE gen_videos SET file_size = 5, generation_model = 'm' WHERE id = 1")
    execute(conn, "UPDATE gen_videos SET video_url = video_url WHERE id = 1")  # unchanged
    # The backup job's own writes must not echo back.
    execute(conn, "UPDATE gen_videos SET backup_status = 'completed', backup_storage_url = 'x'")
    execute(conn, "UPDATE gen_videos SET upscale_video_url = NULL WHERE id = 1")  # removed
    assert notifications(listener) == []

    execute(conn, "UPDATE gen_videos SET upscale_video_url = 'https://fal.media/1u.mp4' WHERE id = 1")
    execute(conn, "UPDATE gen_videos SET video_url = 'https://fal.media/2.mp4' WHERE id = 2")
    execute(conn, "UPDATE gen_images SET image_url = 'https://fal.media/7b.png' WHERE id = 7")
    assert notifications(listener) == [
        {"table": "gen_videos", "id": 1},
        {"table": "gen_videos", "id": 2},
        {"table": "gen_images", "id": 7},
    ]

    # The repeatable step leaves existing triggers alone and never doubles them.
    migrate(database_url)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tgrelid::regclass::text AS t, tgname FROM pg_trigger"
            " WHERE tgname LIKE 'falback_notify%%' ORDER BY 1, 2"
        )
        assert [(r["t"], r["tgname"]) for r in fetch_all(cur)] == [
            ("gen_images", "falback_notify_insert"),
            ("gen_images", "falback_notify_update"),
            ("gen_videos", "falback_notify_insert"),
            ("gen_videos", "falback_notify_update"),
        ]
    conn.commit()


def test_payloads_that_are_not_ours_are_ignored() -> None:
    assert parse_payload('{"table": "gen_videos", "id": 12}') == AppRow("gen_videos", "12")
    assert parse_payload('{"table": "gen_images", "id": "a1b2"}') == AppRow("gen_images", "a1b2")
    for bad in (
        '{"table": "users", "id": 1}',
        '{"table": "gen_videos"}',
        "[1]",
        "nope",
        '{"table": "gen_videos", "id": true}',
        '{"table": "gen_videos", "id": [1]}',
    ):
        assert parse_payload(bad) is None, bad


def test_backoff_grows_with_jitter_up_to_a_cap() -> None:
    backoff = Backoff(base=1, cap=8)
    delays = [backoff.next() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next() <= 1


def test_new_rows_become_jobs_within_seconds_and_get_backed_up(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    relay = start_relay(config)
    try:
        video = add_video(conn, cdn, 1, upscale_size=50_000)
        image = add_image(conn, cdn, 2)
        wait_for(lambda: all_queued(conn, 3), 5, "3 queued ledger rows")
        for ledger_id in statuses(conn):
            assert Job.exists(job_id(ledger_id), connection=redis)
        relay.wait_for_log(f"gen_images {image}: ledger")
        assert f"gen_videos {video}: ledger" in relay.output
        assert "3 dispatched at once" in relay.output
    finally:
        assert relay.stop() == 0
    assert "relay stopped" in relay.output

    run_worker(config)
    assert set(statuses(conn).values()) == {"done"}


def test_a_burst_is_handled_in_batches(config: Config, conn: Connection, redis: Redis) -> None:
    with background(config, "relay") as relay:
        relay.wait_for_log("sweep: ")
        psycopg2.extras.execute_values(
            conn.cursor(),
            "INSERT INTO gen_images (image_url) VALUES %s",
            [(f"https://fal.media/files/burst/{i}.png",) for i in range(1200)],
        )
        conn.commit()
        wait_for(lambda: len(statuses(conn)) == 1200, 15, "1200 ledger rows")
        # 1200 notifications at once: batches of up to 500, one top-up each.
        wait_for(lambda: 3 <= relay.count("in the backlog") <= 6, 15, "the batches handled")
        assert "and 480 more" in relay.output
        assert relay.count("sweep: ") == 1, "the live path did it all"
        # The backlog stays in Postgres: Redis holds the window (2 jobs, no worker yet).
        assert sorted(statuses(conn).values()).count("queued") == 2
        assert redis.llen("rq:queue:backup-images") == 2


def test_rows_added_while_the_relay_is_down_are_caught_up_on_start(
    config: Config, conn: Connection, cdn: FakeCdn
) -> None:
    for n in range(3):
        add_video(conn, cdn, n)
    add_image(conn, cdn, 9)
    config = config.replace(queue_window_per_worker=10)  # room for all: this is about catching up
    with background(config, "relay") as relay:
        wait_for(lambda: all_queued(conn, 4), 10, "4 queued ledger rows")
        relay.wait_for_log("sweep: created=4 ")
    run_worker(config)
    assert set(statuses(conn).values()) == {"done"}


def test_a_url_added_to_an_existing_row_is_backed_up_too(
    config: Config, conn: Connection, cdn: FakeCdn
) -> None:
    with background(config, "relay") as relay:
        relay.wait_for_log("sweep: ")
        video = add_video(conn, cdn, 1)
        wait_for(lambda: all_queued(conn, 1), 5, "the regular video queued")
        run_worker(config)
        upscaled = cdn.add("/files/b/t/video-1_up.mp4", 80_000, seed=77)
        execute(
            conn,
            "UPDATE gen_videos SET upscale_video_url = %s, upscale_file_size = 80000 WHERE id = %s",
            upscaled,
            video,
        )
        wait_for(lambda: sorted(statuses(conn).values()) == ["done", "queued"], 5, "the upscale queued")
    run_worker(config)
    rows = {r["kind"]: r for r in ledger_rows(conn)}
    assert rows["upscale"]["status"] == "done" and rows["upscale"]["source_url"] == upscaled
    with conn.cursor() as cur:
        cur.execute("SELECT backup_status, backup_storage_url FROM gen_videos WHERE id = %s", (video,))
        app_row = fetch_one(cur)
    conn.commit()
    assert app_row == {"backup_status": "completed", "backup_storage_url": rows["upscale"]["destination_url"]}


def test_a_url_the_app_stores_after_its_file_was_copied_updates_the_app_row(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    """fal's webhook was copied before the app wrote upscale_video_url: linking the done
    row must still point the app row at the upscaled copy."""
    video = copied_video(conn, config, redis, cdn, 1)
    upscaled = cdn.add("/files/b/t/video-1_up.mp4", 80_000, seed=77)
    copy = copied_unlinked(conn, config, redis, upscaled)
    with background(config, "relay") as relay:
        relay.wait_for_log("sweep: ")
        execute(conn, "UPDATE gen_videos SET upscale_video_url = %s WHERE id = %s", upscaled, video)
        relay.wait_for_log(f"gen_videos {video}: ledger")
        wait_for(
            lambda: backup_columns(conn, video)["backup_storage_url"] == copy,
            5,
            "the app row to point at the upscaled copy",
        )
    assert backup_columns(conn, video) == {"backup_status": "completed", "backup_storage_url": copy}
    assert [(r["kind"], r["source_id"]) for r in ledger_rows(conn)] == [
        ("regular", str(video)),
        ("upscale", str(video)),
    ]


def test_the_catch_up_sweep_links_and_updates_app_rows_changed_while_down(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    # Row 1 names a file already copied from an unlinked webhook, row 2 a new file.
    first, second = (copied_video(conn, config, redis, cdn, n) for n in (1, 2))
    copied_url = cdn.add("/files/b/t/video-1_up.mp4", 80_000, seed=77)
    copy = copied_unlinked(conn, config, redis, copied_url)
    new_url = cdn.add("/files/b/t/video-2_up.mp4", 90_000, seed=78)
    for video, url in ((first, copied_url), (second, new_url)):
        execute(conn, "UPDATE gen_videos SET upscale_video_url = %s WHERE id = %s", url, video)
    with background(config, "relay") as relay:
        relay.wait_for_log("sweep: created=1 ")
    assert backup_columns(conn, first) == {"backup_status": "completed", "backup_storage_url": copy}
    # The new upscale is not copied yet: the row is no longer 'completed'.
    assert backup_columns(conn, second) == {"backup_status": "in_progress", "backup_storage_url": None}
    linked = {r["source_url"]: (r["source_table"], r["source_id"]) for r in ledger_rows(conn)}
    assert linked[copied_url] == ("gen_videos", str(first))


def test_rows_arriving_while_redis_is_down_stay_pending_then_get_backed_up(
    config: Config, conn: Connection, cdn: FakeCdn, servers: Servers
) -> None:
    relay = start_relay(config)
    try:
        servers.redis.stop()
        try:
            add_video(conn, cdn, 1, upscale_size=40_000)
            add_image(conn, cdn, 2)
            wait_for(lambda: len(statuses(conn)) == 3, 10, "3 ledger rows")
            relay.wait_for_log("redis unavailable", timeout=20)
            assert set(statuses(conn).values()) == {"pending"}
            assert relay.process.poll() is None, "the relay keeps running"
        finally:
            servers.redis.start()  # same port, empty
        # Nobody has to step in: the relay sweeps again once Redis answers.
        wait_for(lambda: all_queued(conn, 3), 20, "the pending rows queued by the relay's sweep")
        relay.wait_for_log("gave_up=0 dispatched=3 ")
    finally:
        assert relay.stop() == 0
    run_worker(config)
    assert set(statuses(conn).values()) == {"done"}


def test_the_relay_reconnects_after_postgres_restarts(
    own_database: str, redis_url: str, servers: Servers, cdn: FakeCdn, tmp_path: Path
) -> None:
    config = Config(database_url=own_database, redis_url=redis_url, data_dir=tmp_path)
    relay = start_relay(config)
    try:
        servers.postgres.pause()
        try:
            # It keeps trying, with growing delays, and does not exit.
            relay.wait_for_log("postgres unavailable", times=2, timeout=15)
            assert relay.process.poll() is None
        finally:
            servers.postgres.resume()
        relay.wait_for_log("listening on channel falback_media", times=2, timeout=40)
        relay.wait_for_log("sweep: ", times=2)
        conn = connect(own_database)
        try:
            add_image(conn, cdn, 1)
            wait_for(lambda: all_queued(conn, 1), 5, "the new image queued by the live path")
            assert relay.count("sweep: ") == 2, "queued by the notification, not by a sweep"
        finally:
            conn.close()
    finally:
        assert relay.stop() == 0

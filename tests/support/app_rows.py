"""App rows whose files are already backed up, and their backup_* columns (the compat step)."""

from __future__ import annotations

from redis import Redis

from core.config import Config
from db import app_rows, ledger
from db.connection import Connection, fetch_one
from jobs.dispatch import top_up_for
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_video, ledger_rows
from tests.support.workers import run_worker


def execute(conn: Connection, sql: str, *params: object) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.commit()


def backup_columns(conn: Connection, video: int) -> dict[str, object]:
    with conn.cursor() as cur:
        cur.execute("SELECT backup_status, backup_storage_url FROM gen_videos WHERE id = %s", (video,))
        row = fetch_one(cur)
    conn.commit()
    assert row is not None
    return dict(row)


def copied_unlinked(conn: Connection, config: Config, redis: Redis, url: str) -> str:
    """Back up `url` the way a fal webhook without an app link does; return the copy's URL."""
    rows = ledger.insert_files(
        conn, [ledger.NewFile(url, "upscale", fal_request_id="r-up")], config.expiry_days
    )
    top_up_for(conn, redis, config, [(r["id"], r["kind"]) for r in rows])
    run_worker(config)
    [row] = [r for r in ledger_rows(conn) if r["source_url"] == url]
    assert row["status"] == "done" and row["source_table"] is None
    return str(row["destination_url"])


def copied_video(conn: Connection, config: Config, redis: Redis, cdn: FakeCdn, n: int) -> int:
    """A gen_videos row (regular file only) whose file is backed up: 'completed'."""
    video = add_video(conn, cdn, n)
    rows = app_rows.upsert_app_row(conn, "gen_videos", str(video), config.expiry_days)
    top_up_for(conn, redis, config, [(r["id"], r["kind"]) for r in rows])
    run_worker(config)
    assert backup_columns(conn, video)["backup_status"] == "completed"
    return video

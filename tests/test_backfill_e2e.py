"""End to end: sample app tables -> `falback backfill` -> a real worker -> local folder."""

from __future__ import annotations

from pathlib import Path

from core.config import Config
from db.connection import Connection
from tests.fakes.cdn import FakeCdn
from tests.support.processes import falback
from tests.support.rows import (
    USER_FAILED_QUERY,
    USER_PROGRESS_QUERY,
    file_md5,
    ledger_rows,
    query,
    seed_thirty,
)
from tests.support.workers import run_worker


def test_it_backs_up_every_file_most_valuable_first(config: Config, conn: Connection, cdn: FakeCdn) -> None:
    """backfill all + a burst worker puts all 40 files in the folder, verified, upscales first."""
    seed_thirty(conn, cdn)

    result = falback(config, "backfill", "--type", "all", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    assert "added 40 file(s)" in result.stdout
    # The rest wait in Postgres: each queue's window holds 2 jobs (FALBACK_QUEUE_WINDOW x
    # at least one worker).
    assert "; 6 on the queues now" in result.stdout

    run_worker(config)

    rows = ledger_rows(conn)
    assert len(rows) == 40
    assert {r["status"] for r in rows} == {"done"}
    for row in rows:
        path = Path(row["destination_url"].removeprefix("file://"))
        assert path.is_file() and path.is_relative_to(config.backup_dir)
        expected = cdn.file(row["source_url"])
        assert row["size_bytes"] == expected.size == path.stat().st_size
        assert row["md5"] == expected.md5() == file_md5(path)
        assert path.parent.parent.name == row["kind"]
    # One worker serves the queues in priority order: upscales, then videos, then images.
    finished = sorted(rows, key=lambda r: r["done_at"])
    assert [r["kind"] for r in finished] == ["upscale"] * 10 + ["regular"] * 20 + ["image"] * 10
    # No temporary files left behind.
    assert not [p for p in config.backup_dir.rglob(".*.part")]

    videos = query(conn, "SELECT * FROM gen_videos ORDER BY id")
    by_url = {r["source_url"]: r for r in rows}
    for video in videos:
        main = by_url[video["upscale_video_url"] or video["video_url"]]
        assert video["backup_status"] == "completed"
        assert video["backup_storage_url"] == main["destination_url"]
        assert video["backup_drive_url"] is None  # the local folder is not Drive
        assert video["backed_up_at"] is not None and video["backup_error"] is None
    images = query(conn, "SELECT * FROM gen_images")
    assert {i["backup_status"] for i in images} == {"completed"}

    summary = {r["file_type"]: r for r in query(conn, "SELECT * FROM backup_status_summary")}
    assert {
        k: (v["total_files"], v["backed_up"], v["failed"], float(v["completion_percentage"]))
        for k, v in summary.items()
    } == {
        "upscale": (10, 10, 0, 100.0),
        "regular": (20, 20, 0, 100.0),
        "image": (10, 10, 0, 100.0),
    }
    assert summary["upscale"]["backed_up_bytes"] == sum(700_000 + n for n in range(10))

    assert query(conn, USER_FAILED_QUERY) == []
    progress = query(conn, USER_PROGRESS_QUERY)[0]
    assert progress["total_upscale_videos"] == 10
    assert progress["backed_up"] == 0 and float(progress["completion_percentage"]) == 0.0
    assert progress["total_size_remaining"] == f"{round(sum(700_000 + n for n in range(10)) / 1024)} kB"

    status = falback(config, "status")
    assert status.returncode == 0
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:4]}
    assert lines["upscale"][1:3] == ["10", "10"] and lines["regular"][1:3] == ["20", "20"]
    assert lines["image"][7] == "100.0%"
    assert "at risk: nothing" in status.stdout and "ALARM" not in status.stdout


def test_it_adds_nothing_new_when_run_twice(config: Config, conn: Connection, cdn: FakeCdn) -> None:
    """A second backfill (before or after the worker) adds no ledger rows and no jobs."""
    seed_thirty(conn, cdn)
    first = falback(config, "backfill", "--type", "upscale", "--limit", "4")
    assert "added 4 file(s)" in first.stdout
    second = falback(config, "backfill", "--type", "upscale", "--limit", "4")
    assert "added 4 file(s)" in second.stdout, "the next 4 oldest upscales"
    rows = ledger_rows(conn)
    assert len(rows) == 8
    # Oldest first: the first eight upscales by age.
    assert sorted(r["source_id"] for r in rows) == sorted(str(i) for i in range(1, 9))
    run_worker(config)
    again = falback(config, "backfill", "--type", "upscale", "--limit", "8")
    assert "added 2 file(s)" in again.stdout
    run_worker(config)
    last = falback(config, "backfill", "--type", "upscale", "--limit", "100")
    assert "added 0 file(s)" in last.stdout
    assert sum(r["status"] == "done" for r in ledger_rows(conn)) == 10


def test_dry_run_changes_nothing(config: Config, conn: Connection, cdn: FakeCdn) -> None:
    seed_thirty(conn, cdn)
    result = falback(config, "backfill", "--type", "images", "--limit", "3", "--dry-run")
    assert result.returncode == 0
    assert "would add 3 file(s)" in result.stdout
    assert ledger_rows(conn) == []


def test_cli_rejects_bad_input(config: Config) -> None:
    bad_type = falback(config, "backfill", "--type", "gifs", "--limit", "3")
    assert bad_type.returncode == 2 and "invalid choice: 'gifs'" in bad_type.stderr
    bad_limit = falback(config, "backfill", "--type", "all", "--limit", "-1")
    assert bad_limit.returncode == 2 and "limit must be between 1 and" in bad_limit.stderr

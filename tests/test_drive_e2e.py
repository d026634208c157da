"""End to end with Drive: `falback backfill` -> a real worker -> the Drive emulator, and
the user's monitoring queries afterwards."""

from __future__ import annotations

from core.config import Config
from db.connection import Connection
from tests.fakes.cdn import FakeCdn
from tests.support.drive import Drive
from tests.support.processes import falback
from tests.support.rows import USER_FAILED_QUERY, USER_PROGRESS_QUERY, ledger_rows, query, seed_thirty
from tests.support.workers import run_worker


def test_the_backfill_lands_every_file_in_drive_once(
    drive_config: Config, conn: Connection, cdn: FakeCdn, drive: Drive
) -> None:
    seed_thirty(conn, cdn)
    result = falback(drive_config, "backfill", "--type", "all", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    assert "added 40 file(s)" in result.stdout

    run_worker(drive_config)

    rows = ledger_rows(conn)
    assert {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
    copies = {c.id: c for c in drive.backups()}
    assert len(copies) == 40  # exactly once each
    for row in rows:
        copy = copies[row["destination_id"]]
        expected = cdn.file(row["source_url"])
        assert (copy.size, copy.md5) == (expected.size, expected.md5()) == (row["size_bytes"], row["md5"])
        assert copy.app_properties["falback_ledger_id"] == str(row["id"])
        assert row["destination"] == "drive" and row["destination_url"].endswith("/view?usp=drivesdk")

    videos = query(conn, "SELECT * FROM gen_videos ORDER BY id")
    by_url = {r["source_url"]: r for r in rows}
    for video in videos:
        main = by_url[video["upscale_video_url"] or video["video_url"]]
        assert video["backup_status"] == "completed"
        assert video["backup_drive_url"] == main["destination_url"]
        assert video["backup_storage_url"] is None
    assert query(conn, USER_FAILED_QUERY) == []
    progress = query(conn, USER_PROGRESS_QUERY)[0]
    assert progress["total_upscale_videos"] == progress["backed_up"] == 10
    assert progress["completion_percentage"] == 100
    summary = {r["file_type"]: r for r in query(conn, "SELECT * FROM backup_status_summary")}
    assert {k: v["completion_percentage"] for k, v in summary.items()} == {
        "upscale": 100,
        "regular": 100,
        "image": 100,
    }

    # A second backfill and worker run change nothing in Drive.
    again = falback(drive_config, "backfill", "--type", "all", "--limit", "1000")
    assert "added 0 file(s)" in again.stdout
    run_worker(drive_config)
    assert len(drive.backups()) == 40

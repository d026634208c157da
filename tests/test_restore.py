"""`falback restore DIR`: the recorded copies read back into DIR/<kind>/<name>, filtered by
kind, date and ledger id, each checked against the MD5 recorded when it was copied; from
the local folder, the Drive emulator and moto's S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.support.drive import Drive
from tests.support.processes import falback
from tests.support.rows import add_image, add_video, ledger_rows, query
from tests.support.s3 import Bucket
from tests.support.workers import run_worker


def back_up_a_mix(config: Config, conn: Connection, cdn: FakeCdn, redis: Redis) -> dict[int, Any]:
    """Two upscaled videos (4 files) made 5 days ago and 3 images made yesterday, backed
    up; the ledger rows by id."""
    for n in range(2):
        add_video(conn, cdn, n, size=30_000 + n, upscale_size=60_000 + n, age_days=5)
    for n in range(3):
        add_image(conn, cdn, n, size=10_000 + n, age_days=1)
    backfill(config, conn, redis, "all", 100)
    run_worker(config)
    rows = {r["id"]: r for r in ledger_rows(conn)}
    assert {r["status"] for r in rows.values()} == {"done"} and len(rows) == 7
    return rows


def restored(target: Path) -> dict[str, bytes]:
    return {str(p.relative_to(target)): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}


def expected(cdn: FakeCdn, rows: dict[int, Any], ids: list[int]) -> dict[str, bytes]:
    """What DIR should hold for these rows: <kind>/<ledger id>-<file name>, the source's bytes."""
    return {
        f"{rows[i]['kind']}/{i}-{Path(rows[i]['source_url']).name}": b"".join(
            cdn.file(rows[i]["source_url"]).iter_bytes()
        )
        for i in ids
    }


def restore(config: Config, target: Path, *args: str) -> tuple[int, str]:
    result = falback(config, "restore", str(target), *args)
    return result.returncode, result.stdout + result.stderr


def test_restore_writes_the_selected_files_checks_them_and_skips_what_is_there(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, tmp_path: Path
) -> None:
    rows = back_up_a_mix(config, conn, cdn, redis)
    images = sorted(i for i, r in rows.items() if r["kind"] == "image")
    upscaled = sorted(i for i, r in rows.items() if r["kind"] == "upscale")

    code, output = restore(config, tmp_path / "images", "--type", "image")
    assert code == 0, output
    assert restored(tmp_path / "images") == expected(cdn, rows, images)
    assert "3 file(s) selected, 3 restored" in output

    since = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    code, output = restore(config, tmp_path / "recent", "--since", since)
    assert code == 0, output
    assert restored(tmp_path / "recent") == expected(cdn, rows, images)

    chosen = [upscaled[0], images[-1]]
    code, output = restore(config, tmp_path / "two", "--ids", ",".join(map(str, chosen)))
    assert code == 0, output
    assert restored(tmp_path / "two") == expected(cdn, rows, chosen)

    # Everything, with one copy damaged at the destination: reported, not left in DIR.
    damaged = upscaled[1]
    [location] = [
        r["location"] for r in query(conn, "SELECT location FROM copies WHERE ledger_id = %s", damaged)
    ]
    path = config.backup_dir / location
    path.write_bytes(b"z" * path.stat().st_size)
    everything = tmp_path / "all"
    code, output = restore(config, everything)
    assert code == 1, output
    assert f"ledger {damaged}: the local copy read back as" in output
    whole = sorted(i for i in rows if i != damaged)
    assert restored(everything) == expected(cdn, rows, whole)  # no partial file either
    assert "7 file(s) selected, 6 restored" in output and "1 not restored" in output

    # Run again: the six are there and skipped; the damaged one fails again.
    code, output = restore(config, everything)
    assert code == 1 and "0 restored" in output and "6 already there" in output, output
    code, output = restore(config, everything, "--ids", ",".join(map(str, whole)))
    assert code == 0 and "6 already there" in output, output
    code, output = restore(config, everything, "--ids", f"{whole[0]},999")
    assert code == 1 and "ledger 999: no copy to restore it from" in output, output


def test_restore_reads_back_from_drive(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, tmp_path: Path
) -> None:
    rows = back_up_a_mix(drive_config, conn, cdn, redis)
    code, output = restore(drive_config, tmp_path / "out", "--destination", "drive")
    assert code == 0, output
    assert restored(tmp_path / "out") == expected(cdn, rows, sorted(rows))


def test_restore_reads_back_from_s3_and_reports_a_changed_object(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, tmp_path: Path
) -> None:
    rows = back_up_a_mix(s3_config, conn, cdn, redis)
    first = min(rows)
    [key] = [r["location"] for r in query(conn, "SELECT location FROM copies WHERE ledger_id = %s", first)]
    s3.put(key, b"not the file")
    code, output = restore(s3_config, tmp_path / "out")
    assert code == 1 and f"ledger {first}: the s3 copy read back as 12 bytes" in output, output
    assert restored(tmp_path / "out") == expected(cdn, rows, sorted(set(rows) - {first}))


def test_restore_falls_back_to_another_copy_when_the_first_is_bad(
    s3_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, s3: Bucket, tmp_path: Path
) -> None:
    rows = back_up_a_mix(s3_config, conn, cdn, redis)
    first = min(rows)
    # A second copy of one file in the local folder, verified more recently than the S3
    # one (so tried first), whose bytes have since changed.
    [s3_copy] = query(conn, "SELECT * FROM copies WHERE ledger_id = %s", first)
    local = s3_config.backup_dir / "upscale" / "bad.mp4"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"q" * s3_copy["size_bytes"])
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO copies (ledger_id, destination, location, url, size_bytes, md5, verified_at)"
            " VALUES (%s, 'local', 'upscale/bad.mp4', '', %s, %s, now())",
            (first, s3_copy["size_bytes"], s3_copy["md5"]),
        )
    conn.commit()

    code, output = restore(s3_config, tmp_path / "out", "--ids", str(first))

    assert code == 1 and f"ledger {first}: the local copy read back as" in output, output
    assert "1 restored" in output and "0 not restored" in output
    assert restored(tmp_path / "out") == expected(cdn, rows, [first])

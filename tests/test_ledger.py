"""Ledger queries that more than one intake path relies on, and the backup job's claim
and done statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db import app_rows, attempts, blobs, copies, drive_state, ledger
from db.connection import Connection
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_video, ledger_rows


def test_an_app_row_links_a_file_a_webhook_reported_first(conn: Connection, cdn: FakeCdn) -> None:
    """A fal webhook without link parameters guesses 'regular' for an upscaled video; when
    the app row appears, the row is linked and takes the app's variant as its kind."""
    url = cdn.base_url + "/files/b/t/video-1_up.mp4"
    [created] = ledger.insert_files(
        conn, [ledger.NewFile(source_url=url, kind="regular", fal_request_id="req-1")], 7
    )
    conn.commit()
    video_id = add_video(conn, cdn, 1, upscale_size=1000)
    linked = app_rows.upsert_app_row(conn, "gen_videos", str(video_id), 7)
    conn.commit()
    assert len(linked) == 2  # the regular video is new, the upscale is linked
    row = next(r for r in ledger_rows(conn) if r["source_url"] == url)
    assert row["id"] == created["id"]
    assert (row["kind"], row["source_table"], row["source_id"], row["variant"], row["fal_request_id"]) == (
        "upscale",
        "gen_videos",
        str(video_id),
        "upscale",
        "req-1",
    )


def test_a_linked_row_keeps_its_link(conn: Connection, cdn: FakeCdn) -> None:
    video_id = add_video(conn, cdn, 1)
    app_rows.upsert_app_row(conn, "gen_videos", str(video_id), 7)
    again = app_rows.link_files(
        conn,
        [
            ledger.NewFile(
                source_url=cdn.base_url + "/files/b/t/video-1.mp4",
                kind="upscale",
                source_table="gen_videos",
                source_id="999",
                variant="upscale",
            )
        ],
        7,
    )
    conn.commit()
    assert [r["kind"] for r in again] == ["regular"]
    [row] = ledger_rows(conn)
    assert (row["kind"], row["source_id"]) == ("regular", str(video_id))


def test_an_id_of_the_wrong_type_or_an_unknown_table_matches_nothing(conn: Connection, cdn: FakeCdn) -> None:
    add_video(conn, cdn, 1)
    assert app_rows.upsert_app_row(conn, "gen_videos", "not-a-number", 7) == []
    assert app_rows.upsert_app_row(conn, "gen_videos", "99999999999999999999", 7) == []
    assert app_rows.upsert_app_row(conn, "other_table", "1", 7) == []
    assert len(app_rows.upsert_app_row(conn, "gen_videos", "1", 7)) == 1


def test_new_files_are_one_statement_in_their_order_and_a_url_counts_once(conn: Connection) -> None:
    urls = [f"https://v3.fal.media/files/b/order/{n}.png" for n in (3, 1, 2)]
    files = [ledger.NewFile(source_url=u, kind="image") for u in [*urls, urls[0]]]
    created = ledger.insert_files(conn, files, 7)
    conn.commit()
    by_id = {r["id"]: r["source_url"] for r in ledger_rows(conn)}
    assert [by_id[r["id"]] for r in created] == urls  # the repeat made no row
    assert ledger.insert_files(conn, files, 7) == []  # all known already


def new_row(conn: Connection, url: str = "https://v3.fal.media/files/b/t/a.png") -> int:
    [created] = ledger.insert_files(conn, [ledger.NewFile(source_url=url, kind="image")], 7)
    conn.commit()
    return int(created["id"])


def add_copy(conn: Connection, ledger_id: int, destination: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO copies (ledger_id, destination, location, url, size_bytes, md5)"
            " VALUES (%s, %s, 'there', 'https://there', 1, %s)",
            (ledger_id, destination, "1" * 32),
        )
    conn.commit()


def copied_to_s3_with_drive_paused(conn: Connection) -> tuple[int, datetime]:
    """A new row with its S3 copy made, and Drive paused for an hour: (row id, until)."""
    row_id = new_row(conn)
    add_copy(conn, row_id, "s3")
    until = datetime.now(UTC) + timedelta(hours=1)
    drive_state.pause(conn, "drive", until, "daily upload cap")
    conn.commit()
    return row_id, until


def test_the_claim_says_which_copies_are_missing_and_which_of_them_wait(conn: Connection) -> None:
    row_id, until = copied_to_s3_with_drive_paused(conn)
    claim = attempts.claim_attempt(conn, row_id, "worker-a", 60, ["drive", "s3", "local"])
    conn.commit()
    assert claim.row is not None and claim.row.attempts == 1 and claim.row.claimed_by == "worker-a"
    assert claim.missing == ["drive", "local"] and claim.paused == {"drive": until}
    assert claim.app_files
    # The row has a live owner: never taken, whatever is missing.
    again = attempts.claim_attempt(conn, row_id, "worker-b", 60, ["drive", "s3", "local"])
    assert again.row is None and again.missing == ["drive", "local"]


def test_no_claim_when_every_missing_copy_is_at_a_paused_destination(conn: Connection) -> None:
    row_id, until = copied_to_s3_with_drive_paused(conn)
    claim = attempts.claim_attempt(conn, row_id, "worker-a", 60, ["drive", "s3"])
    conn.commit()
    assert claim.row is None and claim.missing == ["drive"] and claim.paused == {"drive": until}
    [row] = ledger_rows(conn)
    assert (row["status"], row["attempts"], row["claimed_by"]) == ("pending", 0, None)
    drive_state.resume(conn, "drive")
    conn.commit()
    claim = attempts.claim_attempt(conn, row_id, "worker-a", 60, ["drive", "s3"])
    conn.commit()
    assert claim.row is not None and claim.missing == ["drive"] and claim.paused == {}


def test_done_records_the_last_copy_and_keeps_the_first_preference(conn: Connection) -> None:
    row_id = new_row(conn)
    assert attempts.claim(conn, row_id, "worker-a", 60) is not None
    s3 = copies.NewCopy("s3", "key", "s3://b/key", 10, "2" * 32)
    assert attempts.record_copy(conn, row_id, "worker-a", s3)
    conn.commit()
    drive = copies.NewCopy("drive", "file-id", "https://drive/file-id", 10, "2" * 32)
    done = attempts.record_done(conn, row_id, "worker-a", ["drive", "s3"], last=drive)
    conn.commit()
    assert done.kept == drive and done.copies == 2
    [row] = ledger_rows(conn)
    assert (row["status"], row["destination"], row["destination_id"], row["claimed_by"]) == (
        "done",
        "drive",
        "file-id",
        None,
    )
    assert {c.destination: c.location for c in copies.of_file(conn, row_id)} == {
        "drive": "file-id",
        "s3": "key",
    }


def test_done_with_a_destination_dropped_from_the_list_keeps_its_copy(conn: Connection) -> None:
    row_id = new_row(conn)
    add_copy(conn, row_id, "local")
    assert attempts.claim(conn, row_id, "worker-a", 60) is not None
    done = attempts.record_done(conn, row_id, "worker-a", ["drive"])
    conn.commit()
    assert done.kept is not None and done.kept.destination == "local"
    assert ledger_rows(conn)[0]["destination"] == "local"


def test_done_without_any_copy_changes_nothing(conn: Connection) -> None:
    row_id = new_row(conn)
    assert attempts.claim(conn, row_id, "worker-a", 60) is not None
    done = attempts.record_done(conn, row_id, "worker-a", ["local"])
    conn.commit()
    assert done.kept is None and done.copies == 0
    assert ledger_rows(conn)[0]["status"] == "copying"


def test_done_drops_the_inline_file_the_source_was(conn: Connection) -> None:
    sha = "a" * 64
    row_id = new_row(conn, f"blob:sha256:{sha}")
    blobs.insert_blob(conn, sha, "image/png", b"png")
    conn.commit()
    assert attempts.claim(conn, row_id, "worker-a", 60) is not None
    local = copies.NewCopy("local", "a.png", "file:///a.png", 3, "3" * 32)
    assert attempts.record_done(conn, row_id, "worker-a", ["local"], last=local, blob=sha).kept == local
    conn.commit()
    assert blobs.blob_size(conn, sha) is None

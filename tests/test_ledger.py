"""Ledger queries that more than one intake path relies on."""

from __future__ import annotations

from db import app_rows, ledger
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

"""The app rows' backup_* columns for many rows at once (a backfill, a first sweep): the
same values as for one row at a time, whatever state the files' ledger rows are in."""

from __future__ import annotations

import itertools
import os
import select
from collections.abc import Iterator

import psycopg2
import pytest

from db import app_rows, app_sync
from db.connection import Connection, connection, fetch_all
from db.migrate import migrate
from tests.support.servers import Servers

COLUMNS = "backup_status, backup_drive_url, backup_storage_url, backed_up_at, backup_error, backup_media_url"
# The ledger states a file can be in (None: no ledger row), and copies of a done file.
STATES = [None, "pending", "queued", "copying", "retrying", "done", "failed", "gone"]
COPIES = [(), ("drive",), ("local",), ("s3", "local"), ("drive", "s3")]


def execute(conn: Connection, statement: str, *params: object) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, params)
    conn.commit()


def columns(conn: Connection, table: str) -> dict[str, tuple[object, ...]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT id::text AS id, {COLUMNS} FROM {table} ORDER BY id")
        rows = fetch_all(cur)
    conn.commit()
    return {r["id"]: tuple(v for k, v in r.items() if k != "id") for r in rows}


def add_file(conn: Connection, url: str, n: int, state: str | None, copies: tuple[str, ...]) -> None:
    """A ledger row for `url` in `state`, with the copies of a done file (and the ledger's
    own link for one with none, as a version before the copies table wrote it)."""
    if state is None:
        return
    execute(
        conn,
        "INSERT INTO ledger (source_url, kind, status, last_error, done_at, destination, destination_url)"
        " VALUES (%s, 'regular', %s, %s, CASE WHEN %s = 'done' THEN now() - make_interval(secs => %s) END,"
        " %s, %s)",
        url, state, f"error {n}" if n % 3 else None, state, n,
        "local" if state == "done" and not copies else None,
        f"file:///old/{n}" if state == "done" and not copies else None,
    )  # fmt: skip
    for destination in copies if state == "done" else ():
        execute(
            conn,
            "INSERT INTO copies (ledger_id, destination, location, url, size_bytes, md5)"
            " SELECT id, %s, %s, %s, 1, 'x' FROM ledger WHERE source_url = %s",
            destination, f"{destination}/{n}", f"{destination}://{n}", url,
        )  # fmt: skip


def fill_videos(conn: Connection, ids: list[str]) -> None:
    """One gen_videos row per id, covering every pair of (upscale, regular) states, some
    rows with a regular file only."""
    combinations = itertools.cycle(itertools.product(STATES, STATES, COPIES))
    for n, (row_id, (upscale, regular, copies)) in enumerate(zip(ids, combinations, strict=False)):
        up_url = None if n % 7 == 3 else f"https://cdn/{n}_up.mp4"
        execute(
            conn,
            "INSERT INTO gen_videos (id, video_url, upscale_video_url) VALUES (%s, %s, %s)",
            row_id, f"https://cdn/{n}.mp4", up_url,
        )  # fmt: skip
        if up_url is not None:
            add_file(conn, up_url, n, upscale, copies)
        add_file(conn, f"https://cdn/{n}.mp4", n + 1, regular, copies)


def synced_both_ways(conn: Connection, ids: list[str]) -> tuple[dict[str, tuple[object, ...]], ...]:
    """The columns synced one row at a time, then (cleared) all rows at once."""
    for row_id in ids:
        app_sync.sync_app_row(conn, "gen_videos", row_id)
    conn.commit()
    one_by_one = columns(conn, "gen_videos")
    execute(conn, "UPDATE gen_videos SET backup_status = NULL, backup_media_url = 'old', backup_error = 'x'")
    app_sync.sync_app_rows(conn, [("gen_videos", row_id) for row_id in ids])
    conn.commit()
    return one_by_one, columns(conn, "gen_videos")


def test_many_rows_get_the_columns_one_row_gets(conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALBACK_PUBLIC_URL", "https://falback.example.com/")
    ids = [str(i) for i in range(1, len(STATES) ** 2 * 4 + 1)]
    fill_videos(conn, ids)

    one_by_one, all_at_once = synced_both_ways(conn, ids)

    assert len(all_at_once) == len(ids) > app_sync.BULK_ROWS
    assert all_at_once == one_by_one
    statuses = {v[0] for v in all_at_once.values()}
    assert statuses == {"pending", "in_progress", "failed", "gone", "completed"}
    assert any(v[1] and v[2] for v in all_at_once.values())  # Drive and S3 links
    links = [v[5] for v in all_at_once.values() if v[5] is not None]
    assert links and all(str(link).startswith("https://falback.example.com/media/") for link in links)


def test_written_only_when_a_value_changed(conn: Connection) -> None:
    ids = [str(i) for i in range(1, app_sync.BULK_ROWS + 11)]
    fill_videos(conn, ids)
    app_sync.sync_app_rows(conn, [("gen_videos", row_id) for row_id in ids])
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SELECT xmin::text AS x FROM gen_videos ORDER BY id")
        before = fetch_all(cur)
    conn.commit()

    app_sync.sync_app_rows(conn, [("gen_videos", row_id) for row_id in ids])
    conn.commit()

    with conn.cursor() as cur:
        cur.execute("SELECT xmin::text AS x FROM gen_videos ORDER BY id")
        assert fetch_all(cur) == before


@pytest.fixture
def text_id_database(servers: Servers) -> Iterator[str]:
    """App tables keyed by text and uuid ids."""
    name = f"bulk_ids_{os.getpid()}"
    admin = psycopg2.connect(servers.postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    url = servers.database_url(name)
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE gen_videos (id text PRIMARY KEY, video_url varchar(500),"
            " upscale_video_url varchar(500), file_size integer, upscale_file_size integer,"
            " created_at timestamp DEFAULT now())"
        )
        cur.execute(
            "CREATE TABLE gen_images (id uuid PRIMARY KEY, image_url text, file_size bigint,"
            " created_at timestamptz DEFAULT now())"
        )
    migrate(url)
    yield url
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_text_and_uuid_ids(text_id_database: str) -> None:
    with connection(text_id_database) as conn:
        ids = [f"v-{i}" for i in range(len(STATES) ** 2 * 4)] + ['a,"b\\c}', "{d} e"]
        fill_videos(conn, ids)
        one_by_one, all_at_once = synced_both_ways(conn, ids)
        assert all_at_once == one_by_one and len(all_at_once) == len(ids)

        uuids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(2 * app_sync.BULK_ROWS + 2)]
        for n, row_id in enumerate(uuids):
            execute(
                conn, "INSERT INTO gen_images (id, image_url) VALUES (%s, %s)", row_id, f"https://cdn/{n}.png"
            )
            add_file(conn, f"https://cdn/{n}.png", n, "pending" if n % 2 else None, ())
        app_sync.sync_app_rows(conn, [("gen_images", row_id) for row_id in [*uuids, "not-a-uuid"]])
        conn.commit()
        images = columns(conn, "gen_images")
        assert {v[0] for v in images.values()} == {"pending"}
        assert sum(1 for v in images.values() if v[5]) == len(uuids) // 2

        # A backfill of the other half: the ids cast to the key's type, uuid.
        assert (
            app_rows.backfill_from_app(conn, ["image", "upscale", "regular"], 10_000, 7)["image"][0]
            == len(uuids) // 2
        )
        conn.commit()
        images = columns(conn, "gen_images")
        assert {v[0] for v in images.values()} == {"pending"} and all(v[5] for v in images.values())


def test_a_backfill_counts_what_it_created_and_syncs_the_rows(conn: Connection) -> None:
    """Hundreds of rows: counted per kind, most valuable first; rows already in the ledger
    (a relay's, a webhook's) are neither counted nor left out of sync; a second run adds
    nothing and writes no app row."""
    ids = [str(i) for i in range(1, app_sync.BULK_ROWS + 51)]
    fill_videos(conn, ids)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT f.kind, count(*) AS n FROM falback_app_files f"
            " WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.source_url = f.url) GROUP BY f.kind"
        )
        missing = {r["kind"]: r["n"] for r in fetch_all(cur)}
    conn.commit()

    per_kind = app_rows.backfill_from_app(conn, ["upscale", "regular"], 10_000, 7)
    conn.commit()

    # fill_videos gives no sizes: no bytes.
    assert per_kind == {"upscale": (missing["upscale"], 0), "regular": (missing["regular"], 0)}
    assert list(per_kind) == ["upscale", "regular"]
    backfilled = columns(conn, "gen_videos")
    assert {v[0] for v in backfilled.values()} >= {"pending", "in_progress", "failed"}
    one_by_one, _ = synced_both_ways(conn, ids)
    assert backfilled == one_by_one

    with conn.cursor() as cur:
        cur.execute("SELECT xmin::text AS x FROM gen_videos ORDER BY id")
        before = fetch_all(cur)
    conn.commit()
    assert app_rows.backfill_from_app(conn, ["upscale", "regular"], 10_000, 7) == {}
    conn.commit()
    with conn.cursor() as cur:
        cur.execute("SELECT xmin::text AS x FROM gen_videos ORDER BY id")
        assert fetch_all(cur) == before


def test_the_bulk_update_does_not_wake_the_relay(conn: Connection, database_url: str) -> None:
    """Only backup_* columns are written: the app tables' NOTIFY triggers stay quiet."""
    ids = [str(i) for i in range(1, app_sync.BULK_ROWS + 11)]
    fill_videos(conn, ids)
    listener = psycopg2.connect(database_url)
    listener.autocommit = True
    listener.cursor().execute("LISTEN falback_media")
    try:
        assert app_rows.backfill_from_app(conn, ["upscale", "regular"], 10_000, 7)
        conn.commit()
        assert len({v[0] for v in columns(conn, "gen_videos").values()}) > 1
        listener.poll()
        while select.select([listener], [], [], 0.3)[0]:
            listener.poll()
        assert listener.notifies == []
    finally:
        listener.close()

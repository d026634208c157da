"""core/kinds.py is the one definition of file kinds and app file columns; the SQL files
spell the same things in SQL, and these tests fail when the two drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from core.kinds import APP_FILE_COLUMNS, APP_TABLES, KIND_NAMES, KINDS, columns_of, priority_sql
from db.connection import Connection, fetch_all
from jobs.queues import QUEUE_NAMES

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def sql(name: str) -> str:
    return (MIGRATIONS / name).read_text()


def test_kinds_have_distinct_priorities_queues_and_folders() -> None:
    assert sorted(k.priority for k in KINDS) == list(range(1, len(KINDS) + 1))
    assert len({k.queue for k in KINDS}) == len({k.folder for k in KINDS}) == len(KINDS)
    assert QUEUE_NAMES == tuple(k.queue for k in sorted(KINDS, key=lambda k: k.priority))


def test_the_ledger_accepts_exactly_the_kinds() -> None:
    check = re.search(r"kind\s+text NOT NULL CHECK \(kind IN \(([^)]*)\)\)", sql("0001_ledger.sql"))
    assert check is not None
    assert tuple(re.findall(r"'(\w+)'", check.group(1))) == KIND_NAMES


def test_compat_sql_reads_every_app_file_column_as_its_kind() -> None:
    compat = sql("repeatable/compat.sql")
    # Each SELECT branch names its kind and reads the URL and size columns of that kind.
    branches = re.findall(
        r"'(\w+)'::text(?: AS variant)?, '(\w+)'::text(?: AS kind)?,\s*(\w+)::text(?: AS url)?,"
        r"\s*(\w+)::bigint(?: AS size)?,.*?FROM public\.(\w+) WHERE (\w+) IS NOT NULL",
        compat,
        re.S,
    )
    found = {
        (table, url, size, kind)
        for variant, kind, url, size, table, where in branches
        if variant == kind and where == url
    }
    assert found == {(c.table, c.url_column, c.size_column, c.kind) for c in APP_FILE_COLUMNS}
    summary_order = re.search(r"ORDER BY (CASE f\.kind .*? END)", compat)
    assert summary_order is not None
    assert summary_order.group(1) == priority_sql("f.kind")


def test_notify_triggers_watch_every_url_column() -> None:
    triggers = sql("repeatable/notify_triggers.sql")
    for table in APP_TABLES:
        specs = re.findall(rf"\('{table}', '(\w+)',\s*'([^']*)',\s*'([^']*(?:'\s*'[^']*)*)'\)", triggers)
        assert {name for name, _, _ in specs} == {"falback_notify_insert", "falback_notify_update"}
        for name, timing, condition in specs:
            for column in columns_of(table):
                assert f"NEW.{column.url_column}" in condition, (table, name)
                if name == "falback_notify_update":
                    assert column.url_column in timing, (table, name)


def test_the_app_files_view_yields_each_column_as_its_kind(conn: Connection) -> None:
    """The view the backfill reads (from the sample app schema) agrees with the vocabulary."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO gen_videos (generation_model, video_url, upscale_video_url)"
            " VALUES ('m', 'https://v3.fal.media/r.mp4', 'https://v3.fal.media/u.mp4')"
        )
        cur.execute(
            "INSERT INTO gen_images (generation_model, image_url) VALUES ('m', 'https://v3.fal.media/i.png')"
        )
        cur.execute("SELECT source_table, kind, url FROM falback_app_files ORDER BY url")
        rows = fetch_all(cur)
    conn.rollback()
    by_url = {r["url"].rsplit("/", 1)[-1]: (r["source_table"], r["kind"]) for r in rows}
    assert by_url == {
        "u.mp4": ("gen_videos", "upscale"),
        "r.mp4": ("gen_videos", "regular"),
        "i.png": ("gen_images", "image"),
    }

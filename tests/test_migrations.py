"""Migrations: applied once, recorded, safe to run twice; the compatibility step follows
the app tables when they appear after the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest

from db import app_rows, app_sync, attempts
from db.connection import connection, fetch_all
from db.migrate import apply_sample_schema, migrate, numbered_migrations
from tests.support.servers import Servers


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    admin = psycopg2.connect(servers.postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS migrate_test WITH (FORCE)")
        cur.execute("CREATE DATABASE migrate_test")
    yield servers.database_url("migrate_test")
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE migrate_test WITH (FORCE)")
    admin.close()


def relations(url: str) -> set[str]:
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        return {r["table_name"] for r in fetch_all(cur)}


def columns(url: str, table: str) -> set[str]:
    with connection(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,))
        return {r["column_name"] for r in fetch_all(cur)}


def test_it_applies_once_and_is_safe_to_run_twice(empty_database: str) -> None:
    names = [name for name, _ in numbered_migrations()]
    assert migrate(empty_database) == names
    assert migrate(empty_database) == []
    assert {"ledger", "schema_migrations"} <= relations(empty_database)
    # No app tables: no compatibility views, and nothing created on the app's behalf.
    assert not {"gen_videos", "gen_images", "backup_status_summary"} & relations(empty_database)


def test_app_tables_that_appear_later_get_the_compat_columns(empty_database: str) -> None:
    migrate(empty_database)
    with connection(empty_database) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE gen_images (id bigserial PRIMARY KEY, image_url text,"
            " file_size bigint, created_at timestamptz DEFAULT now())"
        )
    migrate(empty_database)
    assert {
        "backup_status",
        "backup_drive_url",
        "backup_storage_url",
        "backed_up_at",
        "backup_error",
    } <= columns(empty_database, "gen_images")
    assert {"backup_status_summary", "falback_app_files"} <= relations(empty_database)
    # Then gen_videos too: the views are rebuilt to cover both tables.
    apply_sample_schema(empty_database)
    with connection(empty_database) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO gen_videos (video_url, upscale_video_url) VALUES ('a', 'b')")
        cur.execute("INSERT INTO gen_images (image_url) VALUES ('c')")
        cur.execute("SELECT file_type, total_files, not_started FROM backup_status_summary")
        assert [(r["file_type"], r["total_files"], r["not_started"]) for r in fetch_all(cur)] == [
            ("upscale", 1, 1),
            ("regular", 1, 1),
            ("image", 1, 1),
        ]


def test_linked_rows_work_without_app_tables_in_this_database(empty_database: str) -> None:
    """Webhooks may link files to app rows that live in another database."""
    from db import ledger

    migrate(empty_database)
    with connection(empty_database) as conn:
        [row] = app_rows.link_files(
            conn,
            [
                ledger.NewFile(
                    source_url="https://v3.fal.media/files/a.mp4",
                    kind="upscale",
                    source_table="gen_videos",
                    source_id="7",
                    variant="upscale",
                )
            ],
            7,
        )
        app_sync.sync_app_row(conn, "gen_videos", "7")  # nothing to keep in step; no error
        assert attempts.claim(conn, row["id"], "worker", 60) is not None


def test_app_tables_with_other_column_types(empty_database: str) -> None:
    """varchar URLs, timestamp without time zone and text ids work as well."""

    with connection(empty_database) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE gen_videos (id text PRIMARY KEY, video_url varchar(500),"
            " upscale_video_url varchar(500), file_size integer, upscale_file_size integer,"
            " generation_model text, created_at timestamp DEFAULT now())"
        )
        cur.execute(
            "CREATE TABLE gen_images (id uuid PRIMARY KEY, image_url text, file_size bigint,"
            " created_at timestamptz DEFAULT now())"
        )
        cur.execute("INSERT INTO gen_videos (id, video_url, upscale_video_url) VALUES ('v1', 'a', 'b')")
        cur.execute(
            "INSERT INTO gen_images (id, image_url) VALUES ('00000000-0000-0000-0000-000000000001', 'c')"
        )
    migrate(empty_database)
    migrate(empty_database)  # rebuilt from scratch each time
    with connection(empty_database) as conn:
        assert len(app_rows.upsert_app_row(conn, "gen_videos", "v1", 7)) == 2
        uuid = "00000000-0000-0000-0000-000000000001"
        assert len(app_rows.upsert_app_row(conn, "gen_images", uuid, 7)) == 1
        assert app_rows.upsert_app_row(conn, "gen_images", "not-a-uuid", 7) == []
        app_sync.sync_app_row(conn, "gen_videos", "v1")

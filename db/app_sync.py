"""The app rows' backup_* columns, kept in step with their files' ledger rows and copies.

Only these columns of the user's tables are written (migrations/repeatable/compat.sql
added them); a row is written only when a value changes. Few rows go one statement per
row, many rows (a backfill, a first sweep) one UPDATE per table computed by Postgres.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2
from psycopg2 import sql

from core.kinds import APP_TABLES, columns_of, priority_sql
from core.media_links import media_url, public_url_from_env
from db.connection import Connection, Row, fetch_all, fetch_one

log = logging.getLogger(__name__)


def app_files_exist(conn: Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.falback_app_files') IS NOT NULL AS present")
        row = fetch_one(cur)
        return bool(row and row["present"])


def sync_app_row(conn: Connection, source_table: str | None, source_id: str | None) -> None:
    """Keep one app row's backup_* columns in step with its files' ledger rows."""
    sync_app_rows(conn, [(source_table, source_id)])


def sync_app_rows(conn: Connection, rows: Iterable[tuple[str | None, str | None]]) -> None:
    """Keep the backup_* columns of each named app row in step with its files' ledger
    rows (`_columns` says how), in two round trips per table however many rows; a row is
    written only when a value changed."""
    linked = [(table, row_id) for table, row_id in rows if table is not None]
    # The app tables may live in another database (rows linked by webhooks only).
    if linked and app_files_exist(conn):
        sync_known(conn, linked)


def sync_known(conn: Connection, rows: Iterable[tuple[str | None, str | None]]) -> None:
    by_table: dict[str, dict[str, None]] = {}
    for table, row_id in rows:
        if table in APP_TABLES and row_id is not None:
            by_table.setdefault(table, {})[row_id] = None
    public_url = public_url_from_env()
    with conn.cursor() as cur:
        for table, ids in by_table.items():
            if len(ids) >= BULK_ROWS:
                sync_bulk(cur, table, _text_array(ids), public_url)
                continue
            cur.execute(_ROW_FILES, (list(ids), table))
            files: dict[str, list[Row]] = {}
            for f in fetch_all(cur):
                files.setdefault(f["row_id"], []).append(f)
            # One statement per row, sent together: the id goes in as an untyped literal,
            # so Postgres reads it as the key's own type (bigint, uuid, text) and uses the
            # primary key.
            update = sql.SQL(_UPDATE_COLUMNS).format(sql.Identifier(table)).as_string(cur)
            statements = []
            for row_id, row_files in files.items():
                values = _columns(row_files, public_url)
                statements.append(cur.mogrify(update, (*values, row_id, *values)))
            if statements:
                cur.execute(b";".join(statements))


# From this many rows of one table (a backfill, a first sweep), `sync_bulk`: one UPDATE
# reading the app table as a whole, instead of a function call (a subtransaction) and a
# statement per row.
BULK_ROWS = 200


def sync_bulk(cur: Any, table: str, ids: str, public_url: str | None) -> None:
    """`_columns` for many rows of one table (`ids`: a text[] literal), computed and
    written by Postgres in one statement: nothing read back, no values built here."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"public.{table}",))
    if not fetch_one(cur)["present"]:  # type: ignore[index]
        return  # a link to an app table this database does not have
    cur.execute(_sync_bulk_sql(table), {"ids": ids, "media": media_url("", public_url)})


def _text_array(values: Iterable[str]) -> str:
    """A text[] literal ('{"a","b"}') of any strings: a list would go in as ARRAY['1',
    '2', ...], 100,000 constants for Postgres to parse and plan."""
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


# Each row's files with their ledger rows, the row's main file (highest priority) first,
# and the links of its Drive copy and of its copy elsewhere (S3 before the local folder)
# from `copies`; the ledger's own link when no copy row is there (written by a version
# before the copies table).
_COPY_LINKS = """
           coalesce((SELECT c.url FROM copies c WHERE c.ledger_id = l.id AND c.destination = 'drive'),
                    CASE WHEN l.destination = 'drive' THEN l.destination_url END) AS drive_url,
           coalesce((SELECT c.url FROM copies c WHERE c.ledger_id = l.id AND c.destination <> 'drive'
                     ORDER BY c.destination = 's3' DESC LIMIT 1),
                    CASE WHEN l.destination <> 'drive' THEN l.destination_url END) AS storage_url"""
_ROW_FILES = f"""
    SELECT ids.id AS row_id, f.variant, l.status, l.done_at, l.last_error, l.media_id,{_COPY_LINKS}
    FROM unnest(%s::text[]) WITH ORDINALITY AS ids(id, n)
    CROSS JOIN LATERAL falback_app_row_files(%s, ids.id) f
    LEFT JOIN ledger l ON l.source_url = f.url
    ORDER BY ids.n, {priority_sql("f.kind")}
"""
# Most calls (every link, every claim) find the row as it was: skipping those spares the
# user's table a locked, rewritten row.
_UPDATE_COLUMNS = (
    "UPDATE {} SET backup_status = %s, backup_drive_url = %s, backup_storage_url = %s,"
    " backed_up_at = %s, backup_error = %s, backup_media_url = %s WHERE id = %s AND"
    " (backup_status, backup_drive_url, backup_storage_url, backed_up_at, backup_error,"
    " backup_media_url)"
    " IS DISTINCT FROM (%s::text, %s::text, %s::text, %s::timestamptz, %s::text, %s::text)"
)


def _sync_bulk_sql(table: str) -> sql.Composed:
    """`_columns` in SQL for many rows of `table`, and the UPDATE that writes them where a
    value changed. Each row is read once with its file columns (core.kinds, in order of
    importance: the main file is the first with a URL), each file's ledger row joined by
    URL; no view, no grouping. The copy links are looked up for a main file that is done.
    """
    files = columns_of(table)
    urls = [sql.SQL("a.{}").format(sql.Identifier(c.url_column)) for c in files]
    ledgers = [sql.Identifier(f"l{n}") for n in range(len(files))]

    def each(template: str, **extra: sql.Composable) -> list[sql.Composed]:
        return [
            sql.SQL(template).format(url=url, l=led, variant=sql.Literal(f"{c.kind}: "), **extra)
            for url, led, c in zip(urls, ledgers, files, strict=True)
        ]

    def main(column: str) -> sql.Composed:
        cases = each("WHEN {url} IS NOT NULL THEN {l}.{column}", column=sql.Identifier(column))
        return sql.SQL("CASE {} END").format(sql.SQL(" ").join(cases))

    return sql.SQL(_SYNC_BULK).format(
        table=sql.Identifier(table),
        statuses=sql.SQL(", ").join(
            each("CASE WHEN {url} IS NOT NULL THEN coalesce({l}.status, 'none') END")
        ),
        main_id=main("id"),
        main_status=main("status"),
        main_media_id=main("media_id"),
        done_at=sql.SQL(", ").join(each("CASE WHEN {url} IS NOT NULL THEN {l}.done_at END")),
        errors=sql.SQL(", ").join(
            each(
                "CASE WHEN {url} IS NOT NULL AND {l}.status IN ('failed', 'gone')"
                " THEN {variant} || coalesce({l}.last_error, 'None') END"
            )
        ),
        joins=sql.SQL(" ").join(each("LEFT JOIN ledger {l} ON {l}.source_url = {url}::text")),
        any_url=sql.SQL(" OR ").join(sql.SQL("{} IS NOT NULL").format(url) for url in urls),
    )


# The rules of `_columns`; a file with no ledger row counts as 'none'. The ids are
# matched as text (an id not of the key's type matches nothing).
_SYNC_BULK = """
    WITH r AS (
        SELECT a.id,
               array_remove(ARRAY[{statuses}], NULL) AS statuses,
               {main_id} AS main_id, {main_status} AS main_status, {main_media_id} AS main_media_id,
               greatest({done_at}) AS at,
               nullif(array_to_string(ARRAY[{errors}], '; '), '') AS error
        FROM public.{table} a
        JOIN unnest(%(ids)s::text[]) AS ids(id) ON ids.id = a.id::text
        {joins}
        WHERE {any_url}
    ), v AS (
        SELECT r.id,
               CASE WHEN 'failed' = ANY(r.statuses) THEN 'failed'
                    WHEN r.statuses <@ ARRAY['none', 'pending'] THEN 'pending'
                    WHEN NOT r.statuses <@ ARRAY['done', 'gone'] THEN 'in_progress'
                    WHEN 'gone' = ANY(r.statuses) THEN 'gone'
                    ELSE 'completed' END AS status,
               r.at, r.error,
               CASE WHEN r.main_status = 'done' THEN (
                   SELECT coalesce(
                       (SELECT c.url FROM copies c WHERE c.ledger_id = l.id AND c.destination = 'drive'),
                       CASE WHEN l.destination = 'drive' THEN l.destination_url END)
                   FROM ledger l WHERE l.id = r.main_id) END AS drive_url,
               CASE WHEN r.main_status = 'done' THEN (
                   SELECT coalesce(
                       (SELECT c.url FROM copies c WHERE c.ledger_id = l.id AND c.destination <> 'drive'
                        ORDER BY c.destination = 's3' DESC LIMIT 1),
                       CASE WHEN l.destination <> 'drive' THEN l.destination_url END)
                   FROM ledger l WHERE l.id = r.main_id) END AS storage_url,
               %(media)s || r.main_media_id AS media_url
        FROM r
    )
    UPDATE public.{table} a
    SET backup_status = v.status, backup_drive_url = v.drive_url, backup_storage_url = v.storage_url,
        backed_up_at = v.at, backup_error = v.error, backup_media_url = v.media_url
    FROM v
    WHERE a.id = v.id
      AND (a.backup_status, a.backup_drive_url, a.backup_storage_url, a.backed_up_at,
           a.backup_error, a.backup_media_url)
          IS DISTINCT FROM (v.status, v.drive_url, v.storage_url, v.at, v.error, v.media_url)
"""


def _columns(files: list[Row], public_url: str | None) -> tuple[Any, ...]:
    """backup_status sums up every file of the row (failed > in_progress > gone > completed;
    pending while nothing has started); the URLs point at the copies of the row's main file
    (`files[0]`: the upscaled video when there is one), once it is done: its Drive copy in
    backup_drive_url, its copy elsewhere (S3, else the local folder) in backup_storage_url,
    both when both exist (FALBACK_DESTINATIONS). backup_media_url is the main file's stable
    link through the media resolver (fal while fresh, then the copy), once it has a
    ledger row."""
    statuses = [f["status"] for f in files]
    main = files[0]
    if "failed" in statuses:
        status = "failed"
    elif all(s in (None, "pending") for s in statuses):
        status = "pending"
    elif any(s not in ("done", "gone") for s in statuses):
        status = "in_progress"
    elif "gone" in statuses:
        status = "gone"
    else:
        status = "completed"
    errors = [f"{f['variant']}: {f['last_error']}" for f in files if f["status"] in ("failed", "gone")]
    done = main["status"] == "done"
    return (
        status,
        main["drive_url"] if done else None,
        main["storage_url"] if done else None,
        max((f["done_at"] for f in files if f["done_at"]), default=None),
        "; ".join(errors) or None,
        media_url(main["media_id"], public_url) if main["media_id"] else None,
    )


def sync_guarded(
    conn: Connection, rows: Sequence[tuple[str | None, str | None]], *, seen: bool = False
) -> bool:
    """`sync_app_rows` in a savepoint, for a caller whose own change in the same
    transaction must stand whatever the user's table does (a trigger or constraint
    refusing the write, a lock timeout, a changed schema): a ledger row claimed, done or
    retried, signed files recorded. `seen`: the caller's own statement has just seen
    falback_app_files exist (the backup job's claim and done), one round trip fewer.
    Returns whether the app rows were brought up to date; if not, the next change of
    their files syncs them again. A broken connection is raised as it is."""
    linked = [(table, row_id) for table, row_id in rows if table is not None]
    if not linked:
        return True
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT app_row_sync")
        try:
            if seen:
                sync_known(conn, linked)
            else:
                sync_app_rows(conn, linked)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            raise
        except psycopg2.Error as e:
            cur.execute("ROLLBACK TO SAVEPOINT app_row_sync")
            log.warning(
                "app row %s %s not brought up to date: %s: %s",
                *linked[0],
                type(e).__name__,
                " ".join(str(e).split())[:300],
            )
            return False
    return True  # the savepoint ends with the caller's transaction: no RELEASE round trip

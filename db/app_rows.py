"""The app tables' side of the ledger: ledger rows made from app rows, and the app rows'
backup_* columns kept in step with their files' ledger rows.

The app tables (gen_videos, gen_images) are the user's; falback reads them through the
views and functions of migrations/repeatable/compat.sql (the bulk sync alone reads their
file columns directly, as core.kinds names them) and writes only the backup_* columns
that compat step added.

Every function here that creates or links ledger rows for app rows also recomputes those
rows' backup_* columns (`sync_app_rows`): a file linked after it was copied (the app wrote
its URL after fal's webhook) gets no job, so nothing else would.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from core.kinds import APP_TABLES, KIND_NAMES, columns_of, priority_sql
from core.media_links import media_url, public_url_from_env
from db.connection import Connection, Row, fetch_all, fetch_one
from db.ledger import NEW_FILE_INSERT, PRIORITY_ORDER, NewFile

# An app row's primary key as text: integers, uuids and short text ids (nanoid, cuid) all
# fit. An id of the wrong type for its table simply matches no row.
APP_ROW_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def app_files_exist(conn: Connection) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.falback_app_files') IS NOT NULL AS present")
        row = fetch_one(cur)
        return bool(row and row["present"])


# Ledger rows from app files `f` (falback_app_files or falback_app_row_files).
_INSERT_APP_FILES = """
    INSERT INTO ledger (source_url, kind, source_table, source_id, variant,
                        expected_size, source_created_at, expires_at)
    SELECT f.url, f.kind, f.source_table, f.source_id, f.variant, f.size,
           f.created_at, f.created_at + make_interval(days => %(days)s)
"""


# The statement at the heart of a backfill (bench/backfill.py times it alone).
BARE_INSERT_FROM_APP = f"""
    {_INSERT_APP_FILES}
    FROM falback_app_files f
    WHERE f.kind = ANY(%(kinds)s)
      AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.source_url = f.url)
    ORDER BY {PRIORITY_ORDER}, f.created_at, f.source_id
    LIMIT %(limit)s
    ON CONFLICT (source_url) DO NOTHING
"""


def insert_from_app(conn: Connection, kinds: Sequence[str], limit: int, expiry_days: int) -> list[Row]:
    """Create ledger rows for app files that have none, most valuable and oldest first,
    and link unlinked ledger rows to the app files they turn out to be (a relay that was
    down missed the app's write); return the id and kind of the rows created (a row a
    concurrent relay or webhook created first is not among them), with the expected size.
    At most `limit` of each."""
    params = {"kinds": list(kinds), "limit": limit, "days": expiry_days}
    with conn.cursor() as cur:
        cur.execute(_LINK_UNLINKED, params)
        linked = fetch_all(cur)
    # Plain tuples for what may be a whole table's worth of rows: a dict cursor's rows cost
    # more to build than the INSERT takes.
    with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
        cur.execute(
            BARE_INSERT_FROM_APP + " RETURNING id, kind, expected_size, source_table, source_id", params
        )
        created = _dicts(cur)
    # The query above read falback_app_files: no need to ask whether it exists.
    _sync(conn, [(r["source_table"], r["source_id"]) for r in [*linked, *created]])
    return created


def backfill_from_app(
    conn: Connection, kinds: Sequence[str], limit: int, expiry_days: int
) -> dict[str, tuple[int, int]]:
    """`insert_from_app` for a backfill: the same ledger rows created, the same links and
    the same app rows brought up to date, but what comes back is the number and expected
    bytes of the rows created, per kind (most valuable first), rather than a row per file:
    the app rows to sync come out of the INSERT as one array per table."""
    params = {"kinds": list(kinds), "limit": limit, "days": expiry_days, "bulk": _BULK_ROWS}
    with conn.cursor() as cur:
        cur.execute(_LINK_UNLINKED, params)
        few = [(r["source_table"], r["source_id"]) for r in fetch_all(cur)]
    with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
        cur.execute(_CREATED_COUNTED, params)
        results = cur.fetchall()
    per_kind: dict[str, tuple[int, int]] = {}
    public_url = public_url_from_env()
    with conn.cursor() as cur:
        for kind, table, files, size, ids_literal, ids in results:
            if kind is not None:
                per_kind[kind] = (files, size)
            elif ids_literal is not None:
                _sync_bulk(cur, table, ids_literal, public_url)
            else:
                few.extend((table, row_id) for row_id in ids)
    _sync(conn, few)
    return dict(sorted(per_kind.items(), key=lambda item: KIND_NAMES.index(item[0])))


# The backfill's INSERT, its rows counted per kind and their app rows' ids gathered per
# table: as a text[] literal to pass straight back from `bulk` rows on, else as a list.
_CREATED_COUNTED = f"""
    WITH created AS ({BARE_INSERT_FROM_APP} RETURNING kind, expected_size, source_table, source_id)
    SELECT kind, NULL AS source_table, count(*) AS files,
           coalesce(sum(expected_size), 0)::bigint AS bytes, NULL::text AS ids_literal,
           NULL::text[] AS ids
    FROM created GROUP BY kind
    UNION ALL
    SELECT NULL, source_table, NULL, NULL,
           CASE WHEN count(DISTINCT source_id) >= %(bulk)s THEN array_agg(DISTINCT source_id)::text END,
           CASE WHEN count(DISTINCT source_id) < %(bulk)s THEN array_agg(DISTINCT source_id) END
    FROM created WHERE source_table IS NOT NULL GROUP BY source_table
"""


# A URL already in the ledger (a webhook reported it before the app row existed) is linked
# to its app row; an unlinked row's kind was a guess, so the app row's variant wins, as
# long as no attempt has started (the destination's path depends on the kind).
_LINK_ON_CONFLICT = """
    ON CONFLICT (source_url) DO UPDATE
    SET source_table = coalesce(ledger.source_table, excluded.source_table),
        kind = CASE WHEN ledger.source_table IS NULL AND ledger.status IN ('pending', 'queued')
                    THEN excluded.kind ELSE ledger.kind END,
        source_id = coalesce(ledger.source_id, excluded.source_id),
        variant = coalesce(ledger.variant, excluded.variant),
        expected_size = coalesce(ledger.expected_size, excluded.expected_size),
        source_created_at = coalesce(ledger.source_created_at, excluded.source_created_at),
        expires_at = least(ledger.expires_at, excluded.expires_at),
        updated_at = now()
"""


# The same link for ledger rows found by URL among all app files (the sweep's catch-up).
_LINK_UNLINKED = f"""
    UPDATE ledger
    SET source_table = f.source_table, source_id = f.source_id, variant = f.variant,
        kind = CASE WHEN ledger.status IN ('pending', 'queued') THEN f.kind ELSE ledger.kind END,
        expected_size = coalesce(ledger.expected_size, f.size),
        source_created_at = coalesce(ledger.source_created_at, f.created_at),
        expires_at = least(ledger.expires_at, f.created_at + make_interval(days => %(days)s)),
        updated_at = now()
    FROM (SELECT DISTINCT ON (f.url) f.*
          FROM falback_app_files f JOIN ledger l ON l.source_url = f.url
          WHERE l.source_table IS NULL AND f.kind = ANY(%(kinds)s)
          ORDER BY f.url, {priority_sql("f.kind")}
          LIMIT %(limit)s) f
    WHERE ledger.source_url = f.url AND ledger.source_table IS NULL
    RETURNING ledger.source_table, ledger.source_id
"""


def upsert_app_row(conn: Connection, source_table: str, source_id: str, expiry_days: int) -> list[Row]:
    """Create (or link) the ledger rows for one app row's files, and bring the row's
    backup_* columns up to date; return the files' id, kind, status.

    A row a webhook created before the app row existed gets its link here.
    """
    return upsert_app_rows(conn, [(source_table, source_id)], expiry_days)[0]


def upsert_app_rows(
    conn: Connection, app_rows: Sequence[tuple[str, str]], expiry_days: int
) -> list[list[Row]]:
    """`upsert_app_row` for each (table, id), the backup_* columns synced together."""
    found: list[list[Row]] = []
    with conn.cursor() as cur:
        for source_table, source_id in app_rows:
            cur.execute(
                f"""
                {_INSERT_APP_FILES}
                FROM falback_app_row_files(%(table)s, %(id)s) f
                {_LINK_ON_CONFLICT}
                RETURNING id, kind, status, expected_size
                """,
                {"table": source_table, "id": source_id, "days": expiry_days},
            )
            found.append(fetch_all(cur))
    # Rows that returned files come from falback_app_row_files: it exists.
    _sync(conn, [key for key, rows in zip(app_rows, found, strict=True) if rows])
    return found


def link_files(conn: Connection, files: Sequence[NewFile], expiry_days: int) -> list[Row]:
    """Create, or link to their app row, ledger rows for an app row's files (as
    `upsert_app_row` does, for a row this connection cannot see yet); return id, kind, status."""
    rows: list[Row] = []
    with conn.cursor() as cur:
        for f in files:
            cur.execute(
                NEW_FILE_INSERT + _LINK_ON_CONFLICT + "RETURNING id, kind, status",
                {**f.__dict__, "days": expiry_days},
            )
            rows.extend(fetch_all(cur))
    sync_app_rows(conn, [(f.source_table, f.source_id) for f in files])
    return rows


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
        _sync(conn, linked)


def _sync(conn: Connection, rows: Iterable[tuple[str | None, str | None]]) -> None:
    by_table: dict[str, dict[str, None]] = {}
    for table, row_id in rows:
        if table in APP_TABLES and row_id is not None:
            by_table.setdefault(table, {})[row_id] = None
    public_url = public_url_from_env()
    with conn.cursor() as cur:
        for table, ids in by_table.items():
            if len(ids) >= _BULK_ROWS:
                _sync_bulk(cur, table, _text_array(ids), public_url)
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


# From this many rows of one table (a backfill, a first sweep), `_sync_bulk`: one UPDATE
# reading the app table as a whole, instead of a function call (a subtransaction) and a
# statement per row.
_BULK_ROWS = 200


def _dicts(cur: Any) -> list[Row]:
    names = [d.name for d in cur.description]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def _sync_bulk(cur: Any, table: str, ids: str, public_url: str | None) -> None:
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


def not_in_ledger(conn: Connection) -> list[dict[str, Any]]:
    """App files with no ledger row yet, per kind (counted as not started)."""
    if not app_files_exist(conn):
        return []
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT f.kind, count(*) AS files, coalesce(sum(f.size), 0)::bigint AS bytes
            FROM falback_app_files f
            WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.source_url = f.url)
            GROUP BY f.kind
            """
        )
        return [dict(r) for r in fetch_all(cur)]


def sync_app_row_seen(conn: Connection, source_table: str | None, source_id: str | None) -> None:
    """`sync_app_row` for a caller whose own statement has just seen falback_app_files
    exist (the backup job's claim and done): one round trip fewer."""
    if source_table is not None:
        _sync(conn, [(source_table, source_id)])

"""Apply numbered plain-SQL migrations once each, then the repeatable compatibility step.

`migrations/NNNN_name.sql` run in order, each in its own transaction, and are recorded
in `schema_migrations`. `migrations/repeatable/*.sql` run on every call and must be
idempotent (they follow the app tables, which may appear later). An advisory lock keeps
two processes from migrating at once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from db.connection import connection, fetch_all

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NUMBERED = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 7_246_001  # any constant; shared by every falback process


def numbered_migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        if not _NUMBERED.match(path.name):
            raise RuntimeError(f"migration file {path.name} must be named NNNN_lower_name.sql")
        found.append((path.stem, path))
    return found


def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; return the names of the numbered migrations applied now."""
    applied_now: list[str] = []
    with connection(database_url, application_name="falback-migrate") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT name FROM schema_migrations")
            done = {row["name"] for row in fetch_all(cur)}
            for name, path in numbered_migrations(directory):
                if name in done:
                    continue
                log.info("applying migration %s", name)
                cur.execute(path.read_text())
                cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                conn.commit()
                applied_now.append(name)
            for path in sorted((directory / "repeatable").glob("*.sql")):
                cur.execute(path.read_text())
                conn.commit()
            cur.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def apply_sample_schema(database_url: str) -> None:
    """Create the sample app tables (tests and the demo only), then migrate again."""
    sample = Path(__file__).resolve().parent / "sample" / "app_schema.sql"
    with connection(database_url) as conn, conn.cursor() as cur:
        cur.execute(sample.read_text())
    migrate(database_url)

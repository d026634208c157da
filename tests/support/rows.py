"""Sample app rows whose files live on the fake CDN, and reading back what became of them:
ledger rows, query results, the user's monitoring queries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db.connection import Connection, Row, fetch_all
from tests.fakes.cdn import FakeCdn

# The user's monitoring queries, verbatim: they must run unchanged against the new columns.
USER_FAILED_QUERY = """
SELECT id, generation_model, file_size, backup_status, created_at
FROM gen_videos
WHERE backup_status = 'failed'
ORDER BY file_size DESC;
"""

USER_PROGRESS_QUERY = """
SELECT 
    COUNT(*) as total_upscale_videos,
    COUNT(CASE WHEN backup_drive_url IS NOT NULL THEN 1 END) as backed_up,
    ROUND((COUNT(CASE WHEN backup_drive_url IS NOT NULL THEN 1 END)::numeric / COUNT(*)) * 100, 2) as completion_percentage,
    pg_size_pretty(SUM(COALESCE(upscale_file_size, 0))) as total_size_remaining
FROM gen_videos
WHERE upscale_video_url IS NOT NULL;
"""  # noqa: W291, E501 - the user's query, verbatim


def add_video(
    conn: Connection,
    cdn: FakeCdn,
    n: int,
    *,
    size: int = 64 * 1024,
    upscale_size: int | None = None,
    age_days: float = 1.0,
    **cdn_options: Any,
) -> int:
    """Insert a gen_videos row (with an upscaled file when `upscale_size` is given)."""
    video = cdn.add(f"/files/b/t/video-{n}.mp4", size, seed=1000 + n, **cdn_options)
    upscale = None
    if upscale_size is not None:
        upscale = cdn.add(f"/files/b/t/video-{n}_up.mp4", upscale_size, seed=2000 + n, **cdn_options)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO gen_videos (generation_model, video_url, file_size, upscale_video_url,"
            " upscale_file_size, created_at) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (
                "fal-ai/kling-video",
                video,
                size,
                upscale,
                upscale_size,
                datetime.now(UTC) - timedelta(days=age_days),
            ),
        )
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return int(row["id"])  # type: ignore[call-overload]


def add_image(
    conn: Connection, cdn: FakeCdn, n: int, *, size: int = 8 * 1024, age_days: float = 1.0, **cdn_options: Any
) -> int:
    """Insert a gen_images row."""
    image = cdn.add(f"/files/b/t/image-{n}.png", size, seed=3000 + n, **cdn_options)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO gen_images (generation_model, image_url, file_size, created_at)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            ("fal-ai/flux/dev", image, size, datetime.now(UTC) - timedelta(days=age_days)),
        )
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return int(row["id"])  # type: ignore[call-overload]


def seed_thirty(conn: Connection, cdn: FakeCdn) -> None:
    """10 upscaled videos (2 files each), 10 plain videos, 10 images: 30 rows, 40 files."""
    for n in range(10):
        add_video(conn, cdn, n, size=100_000 + n, upscale_size=700_000 + n, age_days=6 - n * 0.1)
    for n in range(10, 20):
        add_video(conn, cdn, n, size=90_000 + n, age_days=5)
    for n in range(10):
        add_image(conn, cdn, n, size=20_000 + n, age_days=4)


def query(conn: Connection, sql: str, *params: object) -> list[Row]:
    """Every row `sql` returns, the transaction ended (so later reads see new commits)."""
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        rows = fetch_all(cur)
    conn.commit()
    return rows


def ledger_rows(conn: Connection) -> list[Row]:
    return query(conn, "SELECT * FROM ledger ORDER BY id")


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()

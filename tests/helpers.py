"""Small helpers shared by tests: sample app rows whose files live on the fake CDN."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db.connection import Connection, fetch_all
from devkit.fakecdn import FakeCdn


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
            ("fal-ai/kling-video", video, size, upscale, upscale_size,
             datetime.now(UTC) - timedelta(days=age_days)),
        )
        row = cur.fetchone()
    conn.commit()
    assert row is not None
    return int(row["id"])  # type: ignore[call-overload]


def add_image(conn: Connection, cdn: FakeCdn, n: int, *, size: int = 8 * 1024,
              age_days: float = 1.0, **cdn_options: Any) -> int:
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


def ledger_rows(conn: Connection) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM ledger ORDER BY id")
        rows = fetch_all(cur)
    conn.commit()
    return rows


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()

"""The offline demo: sample app tables whose files live on a local stand-in for fal's CDN."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from db.connection import connection
from db.migrate import apply_sample_schema
from devkit.fakecdn import FakeCdn

MB = 1024 * 1024


def seed(database_url: str, cdn: FakeCdn, videos: int = 10, images: int = 10) -> None:
    """Add videos (half of them upscaled) and images, created over the past 6 days."""
    apply_sample_schema(database_url)
    now = datetime.now(UTC)
    with connection(database_url) as conn, conn.cursor() as cur:
        for n in range(videos):
            created = now - timedelta(days=6, minutes=-n)
            video = cdn.add(f"/files/b/demo/video-{n}.mp4", 4 * MB + n, content_type="video/mp4")
            upscale, upscale_size = None, None
            if n % 2 == 0:
                upscale_size = 24 * MB + n
                upscale = cdn.add(f"/files/b/demo/video-{n}_upscaled.mp4", upscale_size,
                                  content_type="video/mp4")
            cur.execute(
                "INSERT INTO gen_videos (generation_model, video_url, file_size,"
                " upscale_video_url, upscale_file_size, created_at) VALUES (%s,%s,%s,%s,%s,%s)",
                ("fal-ai/kling-video", video, 4 * MB + n, upscale, upscale_size, created),
            )
        for n in range(images):
            size = 300 * 1024 + n
            image = cdn.add(f"/files/b/demo/image-{n}.png", size, content_type="image/png")
            cur.execute(
                "INSERT INTO gen_images (generation_model, image_url, file_size, created_at)"
                " VALUES (%s,%s,%s,%s)",
                ("fal-ai/flux/dev", image, size, now - timedelta(days=5, minutes=-n)),
            )

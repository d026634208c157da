"""Ledger rows with a copy (or none) for the media resolver's tests, and the copy's bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from core.config import Config
from db.connection import Connection, fetch_one

CONTENT = bytes(range(256)) * 40  # 10,240 bytes, every offset distinguishable
FAL = "http://127.0.0.1/files/m"  # the test config's only source host


def add_media(
    conn: Connection,
    url: str,
    *,
    status: str = "done",
    fresh: bool = False,
    destination: str | None = "local",
    destination_id: str | None = None,
    size: int | None = None,
    md5: str | None = None,
    content_type: str | None = "video/mp4",
    file_name: str | None = None,
) -> str:
    """A ledger row for `url`; fal's window is open (`fresh`) or over. Returns its media id."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ledger (source_url, kind, status, destination, destination_id,"
            " size_bytes, md5, content_type, file_name, expires_at, done_at)"
            " VALUES (%s, 'upscale', %s, %s, %s, %s, %s, %s, %s,"
            " now() + CASE WHEN %s THEN interval '1 day' ELSE interval '-1 hour' END,"
            " CASE WHEN %s = 'done' THEN now() - interval '1 day' END) RETURNING media_id",
            (
                url,
                status,
                destination if status == "done" else None,
                destination_id if status == "done" else None,
                size,
                md5,
                content_type,
                file_name,
                fresh,
                status,
            ),
        )
        row = fetch_one(cur)
    conn.commit()
    assert row is not None
    return str(row["media_id"])


def local_copy(
    config: Config,
    conn: Connection,
    url: str,
    content: bytes = CONTENT,
    name: str = "upscale/2026-12/1-clip.mp4",
    **fields: object,
) -> str:
    """`content` written under FALBACK_BACKUP_DIR and a done row for it; its media id."""
    path = config.backup_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return add_media(
        conn,
        url,
        destination="local",
        destination_id=name,
        size=len(content),
        md5=hashlib.md5(content).hexdigest(),
        **fields,  # type: ignore[arg-type]
    )


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (a hole), ending in one byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(size - 1)
        f.seek(size - 1)
        f.write(b"\x01")
    return path


def gunicorn_workers(base_url: str) -> list[int]:
    """The worker pids of the gunicorn (tests/support/gunicorn.py) listening at `base_url`."""
    import psutil

    port = base_url.rsplit(":", 1)[1]
    for process in psutil.process_iter(["cmdline"]):
        try:
            if (
                "listener:create_app()" in (process.info["cmdline"] or [])
                and process.environ().get("PORT") == port
            ):
                return [c.pid for c in process.children()]
        except psutil.Error:
            continue
    raise AssertionError(f"no gunicorn on port {port}")

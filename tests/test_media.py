"""The media resolver: fal while its window is open, then the backup streamed through
(local folder or Drive), with Range, If-Range, validators and HEAD; the stable /media/<id>
link and the app rows' backup_media_url. The browser and the 1 GiB proxy:
tests/test_media_serving.py."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import psycopg2
import pytest
from flask.testing import FlaskClient

from core.config import Config
from db import app_rows, app_sync
from db.connection import Connection
from db.migrate import MIGRATIONS_DIR, migrate
from tests.support.drive import Drive
from tests.support.media import CONTENT, FAL, add_media, local_copy
from tests.support.rows import query
from tests.support.servers import Servers
from tests.support.web import create_app_for

SIZE = len(CONTENT)
MD5 = hashlib.md5(CONTENT).hexdigest()


def test_fresh_fal_copy_redirects_to_fal(client: FlaskClient, config: Config, conn: Connection) -> None:
    local_copy(config, conn, f"{FAL}/a.mp4", fresh=True)
    answer = client.get("/media", query_string={"src": f"{FAL}/a.mp4"})
    assert answer.status_code == 302 and answer.headers["Location"] == f"{FAL}/a.mp4"
    assert answer.headers["Cache-Control"] == "private, max-age=300"


def test_expired_fal_copy_is_served_from_the_local_folder(
    client: FlaskClient, config: Config, conn: Connection
) -> None:
    local_copy(config, conn, f"{FAL}/a.mp4")
    answer = client.get("/media", query_string={"src": f"{FAL}/a.mp4"})
    assert answer.status_code == 200 and answer.data == CONTENT
    assert answer.headers["Content-Type"] == "video/mp4"
    assert answer.headers["Accept-Ranges"] == "bytes"
    assert answer.headers["ETag"] == f'"{MD5}"'
    assert answer.headers["Content-Length"] == str(SIZE) and "Last-Modified" in answer.headers
    assert answer.headers["Content-Disposition"] == "inline; filename*=UTF-8''a.mp4"


def test_known_gone_inside_the_window_is_served_from_the_backup(
    client: FlaskClient, config: Config, conn: Connection
) -> None:
    media_id = local_copy(config, conn, f"{FAL}/a.mp4", fresh=True)
    assert client.get(f"/media/{media_id}").status_code == 302
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET status = 'gone'")  # fal lost it inside its window
    conn.commit()
    answer = client.get("/media", query_string={"src": f"{FAL}/a.mp4"})
    assert answer.status_code == 200 and answer.data == CONTENT
    # Gone without a copy: nothing to serve, window or not.
    add_media(conn, f"{FAL}/lost.mp4", status="gone", fresh=True)
    assert client.get("/media", query_string={"src": f"{FAL}/lost.mp4"}).status_code == 404


def test_copy_in_drive_is_proxied_with_the_range_forwarded(
    drive_config: Config, drive: Drive, conn: Connection
) -> None:
    file_id = drive.emulator.add_file("clip.mp4", CONTENT, drive.folder_id, mime_type="video/mp4")
    media_id = add_media(
        conn, f"{FAL}/d.mp4", destination="drive", destination_id=file_id, size=SIZE, md5=MD5
    )
    client = create_app_for(drive_config).test_client()
    whole = client.get(f"/media/{media_id}")
    assert whole.status_code == 200 and whole.data == CONTENT
    part = client.get(f"/media/{media_id}", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == CONTENT[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{SIZE}"
    assert client.head(f"/media/{media_id}").headers["Content-Length"] == str(SIZE)
    drive.emulator.remove(file_id)
    assert client.get(f"/media/{media_id}").status_code == 404


def test_no_copy_after_the_window_is_404(client: FlaskClient, conn: Connection) -> None:
    add_media(conn, f"{FAL}/failed.mp4", status="failed")
    add_media(conn, f"{FAL}/gone.mp4", status="gone", fresh=True)
    for name in ("failed", "gone"):
        assert client.get("/media", query_string={"src": f"{FAL}/{name}.mp4"}).status_code == 404
    # Inside the window, not yet copied: fal still has it.
    add_media(conn, f"{FAL}/pending.mp4", status="pending", fresh=True)
    assert client.get("/media", query_string={"src": f"{FAL}/pending.mp4"}).status_code == 302


def test_unknown_sources_redirect_only_to_fal_hosts(client: FlaskClient) -> None:
    known_host = client.get("/media", query_string={"src": f"{FAL}/never-seen.mp4"})
    assert known_host.status_code == 302 and known_host.headers["Location"] == f"{FAL}/never-seen.mp4"
    for src in ("https://evil.example/x.mp4", "http://127.0.0.1.evil.example/x.mp4"):
        assert client.get("/media", query_string={"src": src}).status_code == 404


@pytest.mark.parametrize(
    "src",
    [
        None,
        "",
        "x" * 5000,
        "ftp://127.0.0.1/a",
        "javascript:alert(1)",
        "/relative",
        "http:///nohost",
        f"{FAL}/a\r\nSet-Cookie: x=1",
    ],
)
def test_bad_src_is_400(client: FlaskClient, src: str | None) -> None:
    answer = client.get("/media", query_string={} if src is None else {"src": src})
    assert answer.status_code == 400


def test_guessable_ids_find_nothing(client: FlaskClient, config: Config, conn: Connection) -> None:
    media_id = local_copy(config, conn, f"{FAL}/a.mp4")
    assert len(media_id) == 32
    for path in ("/media/1", "/media/gen_videos/1", f"/media/{media_id[:-1]}0x", "/media/" + "0" * 32):
        assert client.get(path).status_code == 404
    assert client.get(f"/media/{media_id}").data == CONTENT


@pytest.mark.parametrize(
    ("header", "status", "first", "last"),
    [
        ("bytes=0-99", 206, 0, 99),
        ("bytes=5000-5999", 206, 5000, 5999),
        ("bytes=-500", 206, SIZE - 500, SIZE - 1),
        ("bytes=10000-", 206, 10000, SIZE - 1),
        ("bytes=9000-99999", 206, 9000, SIZE - 1),
        ("bytes=0-0,100-199", 200, 0, SIZE - 1),  # several ranges: the whole file
        ("items=0-9", 200, 0, SIZE - 1),
        ("bytes=20-10", 200, 0, SIZE - 1),
    ],
)
def test_ranges(
    client: FlaskClient, config: Config, conn: Connection, header: str, status: int, first: int, last: int
) -> None:
    media_id = local_copy(config, conn, f"{FAL}/a.mp4")
    answer = client.get(f"/media/{media_id}", headers={"Range": header})
    assert answer.status_code == status and answer.data == CONTENT[first : last + 1]
    assert answer.headers["Content-Length"] == str(last - first + 1)
    if status == 206:
        assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    else:
        assert "Content-Range" not in answer.headers


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", "bytes=99999-100000", "bytes=-0"])
def test_unsatisfiable_range_is_416(
    client: FlaskClient, config: Config, conn: Connection, header: str
) -> None:
    media_id = local_copy(config, conn, f"{FAL}/a.mp4")
    answer = client.get(f"/media/{media_id}", headers={"Range": header})
    assert answer.status_code == 416 and answer.headers["Content-Range"] == f"bytes */{SIZE}"


def test_if_range_and_if_none_match(client: FlaskClient, config: Config, conn: Connection) -> None:
    media_id = local_copy(config, conn, f"{FAL}/a.mp4")
    first = client.get(f"/media/{media_id}")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    ranged = {"Range": "bytes=0-9"}
    for if_range, status in [
        (etag, 206),
        ('"other"', 200),
        (f"W/{etag}", 200),
        (modified, 206),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
        ("not a date", 200),
    ]:
        answer = client.get(f"/media/{media_id}", headers={**ranged, "If-Range": if_range})
        assert answer.status_code == status, if_range
        assert len(answer.data) == (10 if status == 206 else SIZE)
    assert client.get(f"/media/{media_id}", headers={"If-None-Match": etag}).status_code == 304


def test_head_sends_the_headers_only(client: FlaskClient, config: Config, conn: Connection) -> None:
    media_id = local_copy(config, conn, f"{FAL}/a.mp4")
    whole = client.head(f"/media/{media_id}")
    assert whole.status_code == 200 and whole.data == b""
    assert whole.headers["Content-Length"] == str(SIZE) and whole.headers["ETag"] == f'"{MD5}"'
    part = client.head(f"/media/{media_id}", headers={"Range": "bytes=-10"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}"


def test_content_types(client: FlaskClient, config: Config, conn: Connection) -> None:
    guessed = local_copy(config, conn, f"{FAL}/b.webm", name="image/b.webm", content_type=None)
    assert client.get(f"/media/{guessed}").headers["Content-Type"] == "video/webm"
    html = local_copy(config, conn, f"{FAL}/c.html", name="image/c.html", content_type="text/html")
    answer = client.get(f"/media/{html}")
    # Never a page of this origin: a download, sandboxed.
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in answer.headers["Content-Security-Policy"]


def test_a_local_path_outside_the_backup_folder_is_never_served(
    client: FlaskClient, config: Config, conn: Connection, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("not yours")
    config.backup_dir.mkdir(parents=True, exist_ok=True)
    (config.backup_dir / "link.mp4").symlink_to(tmp_path / "secret.txt")
    for n, destination_id in enumerate(["../secret.txt", str(tmp_path / "secret.txt"), "link.mp4", "."]):
        media_id = add_media(conn, f"{FAL}/x{n}.mp4", destination_id=destination_id)
        assert client.get(f"/media/{media_id}").status_code == 404, destination_id


def test_backup_media_url_follows_the_main_file(
    config: Config, conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO gen_videos (video_url, upscale_video_url) VALUES (%s, %s) RETURNING id",
            (f"{FAL}/v.mp4", f"{FAL}/v_up.mp4"),
        )
        video = str(cur.fetchone()["id"])  # type: ignore[call-overload,index]
    conn.commit()
    app_rows.upsert_app_row(conn, "gen_videos", video, config.expiry_days)
    conn.commit()
    [upscale] = query(conn, "SELECT media_id FROM ledger WHERE source_url LIKE '%%v_up.mp4'")
    [row] = query(conn, "SELECT backup_media_url FROM gen_videos")
    assert row["backup_media_url"] == f"/media/{upscale['media_id']}"
    monkeypatch.setenv("FALBACK_PUBLIC_URL", "https://falback.example.com/")
    app_sync.sync_app_row(conn, "gen_videos", video)
    conn.commit()
    [row] = query(conn, "SELECT backup_media_url FROM gen_videos")
    assert row["backup_media_url"] == f"https://falback.example.com/media/{upscale['media_id']}"


def test_media_ids_are_backfilled_for_existing_rows(servers: Servers, tmp_path: Path) -> None:
    earlier = tmp_path / "migrations"
    earlier.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0008":
            shutil.copy(path, earlier / path.name)
    admin = psycopg2.connect(servers.postgres_url)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE media_backfill")
    url = servers.database_url("media_backfill")
    try:
        migrate(url, earlier)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            for n in range(3):
                cur.execute("INSERT INTO ledger (source_url, kind) VALUES (%s, 'image')", (f"{FAL}/{n}",))
        migrate(url)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT media_id FROM ledger")
            ids = {r[0] for r in cur.fetchall()}
        conn.close()
        assert len(ids) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    finally:
        admin.cursor().execute("DROP DATABASE IF EXISTS media_backfill WITH (FORCE)")
        admin.close()

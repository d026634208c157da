"""The media proxy under gunicorn's gevent workers: a 1 GiB copy streams through in
constant memory, and a <video> in headless Chromium plays and seeks in a backup whose fal
copy has expired."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from core.config import Config
from db.connection import Connection
from tests.support.browser import launch_chromium
from tests.support.gunicorn import gunicorn
from tests.support.media import FAL, add_media, gunicorn_workers, local_copy, sparse_file
from tests.support.workers import peak_rss

CLIP = Path(__file__).resolve().parent / "fixtures" / "clip.webm"  # 4 s VP9, 32x24, 3 KB
GIB = 1024 * 1024 * 1024


@pytest.mark.slow
def test_a_gib_streams_through_a_worker_in_constant_memory(
    config: Config, conn: Connection, tmp_path: Path
) -> None:
    name = "upscale/2026-12/1-big.mp4"
    sparse_file(config.backup_dir / name, GIB)
    big = add_media(conn, f"{FAL}/big.mp4", destination_id=name, size=GIB)
    small = local_copy(config, conn, f"{FAL}/small.mp4")
    with gunicorn(config, tmp_path / "gunicorn.log", workers=1) as base_url:
        [worker] = gunicorn_workers(base_url)
        # Warm up: imports, the first connection, a whole small file through the proxy.
        assert requests.get(f"{base_url}/media/{small}", timeout=10).status_code == 200
        before = peak_rss(worker)
        received = 0
        with requests.get(f"{base_url}/media/{big}", stream=True, timeout=30) as answer:
            assert answer.status_code == 200 and answer.headers["Content-Length"] == str(GIB)
            for chunk in answer.iter_content(1024 * 1024):
                received += len(chunk)
        after = peak_rss(worker)
    assert received == GIB
    assert before is not None and after is not None
    # A buffered body would add 1 GiB; streaming adds at most a few chunks.
    assert after - before < 32 * 1024 * 1024, (before, after)


def test_a_video_plays_and_seeks_in_chromium(config: Config, conn: Connection, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    src = f"{FAL}/clip.webm"
    local_copy(
        config, conn, src, CLIP.read_bytes(), name="upscale/2026-12/2-clip.webm", content_type="video/webm"
    )
    log = tmp_path / "gunicorn.log"
    with gunicorn(config, log) as base_url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/ping")
            media = requests.Request("GET", f"{base_url}/media", params={"src": src}).prepare().url
            page.set_content(f'<video id="v" muted preload="auto" src="{media}"></video>')
            page.wait_for_function("document.getElementById('v').readyState >= 1", timeout=15000)
            duration = page.evaluate("document.getElementById('v').duration")
            assert duration == pytest.approx(4.0, abs=0.3)
            page.evaluate(f"document.getElementById('v').currentTime = {duration / 2}")
            page.wait_for_function(
                "(() => { const v = document.getElementById('v');"
                " return !v.seeking && v.readyState >= 2; })()",
                timeout=15000,
            )
            assert page.evaluate("document.getElementById('v').currentTime") == pytest.approx(
                duration / 2, abs=0.5
            )
            page.evaluate("document.getElementById('v').play()")
            page.wait_for_function("document.getElementById('v').currentTime > 2.5", timeout=15000)
            assert page.evaluate("document.getElementById('v').error") is None
        finally:
            browser.close()
    # (The access log redacts query strings.)
    access = [line for line in log.read_text().splitlines() if '"GET /media?' in line]
    # The media element asked for a range (Chromium's first is `bytes=0-`): 206.
    assert any('" 206 ' in line for line in access), log.read_text()[-3000:]

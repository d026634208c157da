"""The status page, its JSON twin and the metrics: figures from the database, the at-risk
list by time left, failures by reason with a same-origin retry, Prometheus text; and the
page itself in headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from core.config import Config
from db.connection import Connection
from tests.fakes.cdn import FakeCdn
from tests.support.browser import launch_chromium
from tests.support.gunicorn import gunicorn
from tests.support.rows import add_image, ledger_rows
from tests.support.web import ADMIN_TOKEN, admin_headers, create_app_for
from tests.support.workers import run_worker

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def seed_ledger(conn: Connection) -> None:
    """Two files at risk (one expiring in 2 h), two failures of one reason and one of
    another, one file done in the last hour."""
    with conn.cursor() as cur:
        for url, kind, status, size, hours_left, error in [
            ("https://v3.fal.media/a.mp4", "upscale", "pending", 5000, 30, None),
            ("https://v3.fal.media/b.mp4", "regular", "retrying", 700, 2, "source answered 503"),
            ("https://v3.fal.media/c.png", "image", "failed", 10, 100, "host x is not allowed"),
            ("https://v3.fal.media/d.png", "image", "failed", 20, 90, "host x is not allowed"),
            ("https://v3.fal.media/e.png", "image", "failed", 30, 80, "source answered 403"),
        ]:
            cur.execute(
                "INSERT INTO ledger (source_url, kind, status, expected_size, last_error, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, now() + make_interval(hours => %s))",
                (url, kind, status, size, error, hours_left),
            )
        cur.execute(
            "INSERT INTO ledger (source_url, kind, status, size_bytes, destination, done_at,"
            " expires_at) VALUES ('https://v3.fal.media/f.mp4', 'upscale', 'done', 4000, 'local',"
            " now() - interval '10 minutes', now() + interval '5 days')"
        )
    conn.commit()


def test_api_status_matches_the_database(client: FlaskClient, conn: Connection) -> None:
    seed_ledger(conn)
    response = client.get("/api/status", headers=admin_headers())
    assert response.status_code == 200 and response.json is not None
    figures = response.json
    kinds = {k["kind"]: k for k in figures["kinds"]}
    assert (kinds["upscale"]["files"], kinds["upscale"]["backed_up"]) == (2, 1)
    assert (kinds["upscale"]["bytes_total"], kinds["upscale"]["bytes_done"]) == (9000, 4000)
    assert (kinds["image"]["files"], kinds["image"]["failed"]) == (3, 3)
    assert [r["source_id"] is None and r["kind"] for r in figures["at_risk"]] == [
        "regular",
        "upscale",
        "image",
        "image",
        "image",
    ]
    assert 3600 < figures["at_risk"][0]["seconds_left"] <= 7200
    assert [(g["reason"], g["files"]) for g in figures["failures"]] == [
        ("host x is not allowed", 2),
        ("source answered 403", 1),
    ]
    assert figures["throughput_last_hour"] == {"files": 1, "bytes": 4000}
    assert figures["destinations"] == {"local": {"files": 1, "bytes": 4000}}
    assert figures["not_safe"] == 5
    # 5,760 bytes left at 4,000 bytes an hour: about 1.4 h, past the first expiry (2 h)? No:
    # the ETA fits, so no alarm.
    assert figures["eta_seconds"] == pytest.approx((9000 - 4000 + 700 + 60) / 4000 * 3600)
    assert figures["alarms"] == []


def test_an_eta_past_the_first_expiry_raises_the_alarm(client: FlaskClient, conn: Connection) -> None:
    seed_ledger(conn)
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET expected_size = 10 * 1000 * 1000 WHERE source_url LIKE '%a.mp4'")
        cur.execute(
            "INSERT INTO destination_pauses (destination, paused_until, reason)"
            " VALUES ('drive', now() + interval '1 hour', 'the daily upload cap')"
        )
    conn.commit()
    alarms = client.get("/api/status", headers=admin_headers()).json["alarms"]  # type: ignore[index]
    assert any(a.startswith("drive is paused until") and a.endswith("the daily upload cap") for a in alarms)
    assert any("the backlog needs about" in a and "may expire in 1h" in a for a in alarms)


def test_retry_action_requeues_one_reason_and_refuses_cross_site(
    client: FlaskClient, conn: Connection, redis: Redis
) -> None:
    seed_ledger(conn)
    form = {"reason": "host x is not allowed"}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}, {}):
        refused = client.post("/status/retry", data=form, headers={**admin_headers(), **headers})
        assert refused.status_code == 403
    assert sum(r["status"] == "failed" for r in ledger_rows(conn)) == 3
    done = client.post(
        "/status/retry", data=form, headers={**admin_headers(), "Sec-Fetch-Site": "same-origin"}
    )
    assert done.status_code == 303 and done.headers["Location"].endswith("/status?retried=2")
    statuses = {r["source_url"][-5:]: r["status"] for r in ledger_rows(conn)}
    assert (statuses["c.png"], statuses["d.png"], statuses["e.png"]) == ("queued", "queued", "failed")
    assert redis.llen("rq:queue:backup-images") == 2


def test_status_pages_need_the_token(client: FlaskClient) -> None:
    for path in ("/status", "/api/status", "/metrics"):
        assert client.get(path).status_code == 401
    assert client.post("/status/retry", data={"reason": "x"}).status_code == 401


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_parse_and_move_when_a_file_is_copied(
    config: Config, conn: Connection, cdn: FakeCdn, tmp_path: Path
) -> None:
    """Two gunicorn processes in multiprocess mode: webhook counts add up across them."""
    add_image(conn, cdn, 1, size=1234)
    headers = admin_headers()
    with gunicorn(config, tmp_path / "gunicorn.log", workers=2, threads=2) as base_url:
        import requests

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            response = requests.get(f"{base_url}/metrics", headers=headers, timeout=10)
            assert response.status_code == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return metric_samples(response.text)

        before = scrape()
        assert before[("falback_files_not_safe", ())] == 0
        for _ in range(6):  # spread over both processes
            assert requests.post(f"{base_url}/webhooks/app", data=b"{}", timeout=10).status_code == 403
        requests.post(
            f"{base_url}/backfill", json={"type": "images", "limit": 10}, headers=headers, timeout=10
        ).raise_for_status()
        queued = scrape()
        assert queued[("falback_files_not_safe", ())] == 1
        assert queued[("falback_queue_depth", (("queue", "backup-images"),))] == 1
        assert 0 < queued[("falback_earliest_expiry_seconds", ())] < 7 * 86400
        assert queued[("falback_webhooks_total", (("endpoint", "app"), ("status", "403")))] == 6
        run_worker(config)
        copied = scrape()
    assert copied[("falback_files_not_safe", ())] == 0
    assert copied[("falback_files", (("kind", "image"), ("status", "done")))] == 1
    assert copied[("falback_bytes_copied", (("destination", "local"),))] == 1234
    assert copied[("falback_queue_depth", (("queue", "backup-images"),))] == 0
    assert copied[("falback_destination_paused", (("destination", "local"),))] == 0


class _OtherSite(BaseHTTPRequestHandler):
    """A page on another origin whose form posts to falback's retry action."""

    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = (
            f'<form id="f" method="post" action="{self.target}/status/retry">'
            '<input name="reason" value="host x is not allowed"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_site() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtherSite)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_page_in_a_real_browser(
    config: Config, conn: Connection, tmp_path: Path, other_site: ThreadingHTTPServer
) -> None:
    from playwright.sync_api import sync_playwright

    seed_ledger(conn)
    with gunicorn(config, tmp_path / "gunicorn.log") as base_url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(
                http_credentials={"username": "admin", "password": ADMIN_TOKEN},
                viewport={"width": 390, "height": 844},
            )  # a phone
            page.goto(f"{base_url}/status")
            assert page.locator("#all-clear").count() == 1
            upscale = page.locator('#progress tr[data-kind="upscale"] .files').inner_text()
            assert upscale == "1 / 2"
            at_risk = page.locator("#at-risk tr[data-ledger]")
            assert at_risk.count() == 5
            assert "urgent" in (at_risk.nth(0).locator("td").nth(4).get_attribute("class") or "")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
            # Another site's form cannot use the browser's credentials to retry.
            _OtherSite.target = base_url
            other = f"http://127.0.0.1:{other_site.server_address[1]}/"
            page.goto(other)
            page.wait_for_load_state("networkidle")
            assert "cross-site request refused" in page.content()
            assert sum(r["status"] == "failed" for r in ledger_rows(conn)) == 3
            # The page's own button works.
            page.goto(f"{base_url}/status")
            page.locator("#failures form").first.locator("button").click()
            page.wait_for_url("**/status?retried=2")
            assert page.locator("#retried").inner_text().startswith("2 failed file(s)")
        finally:
            browser.close()
    assert sum(r["status"] == "failed" for r in ledger_rows(conn)) == 1


def test_retry_with_redis_down_puts_the_files_back_in_the_backlog(config: Config, conn: Connection) -> None:
    seed_ledger(conn)
    client = create_app_for(config.replace(redis_url="redis://127.0.0.1:1/0")).test_client()
    done = client.post(
        "/status/retry",
        data={"reason": "host x is not allowed"},
        headers={**admin_headers(), "Sec-Fetch-Site": "same-origin"},
    )
    assert done.status_code == 303
    statuses = {r["source_url"][-5:]: r["status"] for r in ledger_rows(conn)}
    assert (statuses["c.png"], statuses["d.png"]) == ("pending", "pending")  # for the next top-up

"""The web app: /healthz, the admin API (/backfill, /status) and /rq behind the token."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.queues import QUEUE_NAMES
from tests.fakes.cdn import FakeCdn
from tests.support.rows import add_image, add_video, ledger_rows
from tests.support.web import ADMIN_TOKEN, admin_headers, create_app_for


def queued_job_ids(redis: Redis) -> dict[str, list[str]]:
    return {name: [j.decode() if isinstance(j, bytes) else j for j in redis.lrange(f"rq:queue:{name}", 0, -1)]
            for name in QUEUE_NAMES}


def test_healthz_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "postgres": "ok", "redis": "ok"}


def test_healthz_503_when_redis_is_down(config: Config) -> None:
    client = create_app_for(config.replace(redis_url="redis://127.0.0.1:1/0")).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "postgres": "ok", "redis": "down"}


def test_healthz_503_when_postgres_is_down(config: Config) -> None:
    assert config.database_url
    broken = config.database_url.replace("/test_", "/missing_")
    client = create_app_for(config.replace(database_url=broken)).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "postgres": "down", "redis": "ok"}


def test_the_users_backfill_call_enqueues_by_priority(
    client: FlaskClient, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    for n in range(12):
        add_video(conn, cdn, n, upscale_size=50_000, age_days=6 - n * 0.1)
    add_image(conn, cdn, 1)
    response = client.post("/backfill", json={"type": "upscale", "limit": 10}, headers=admin_headers())
    assert response.status_code == 200, response.json
    assert response.json is not None
    assert response.json["files"] == 10 and response.json["per_kind"] == {
        "upscale": {"files": 10, "bytes": 500_000}
    }
    rows = ledger_rows(conn)
    assert [r["status"] for r in rows] == ["queued"] * 10
    assert queued_job_ids(redis) == {
        "backup-upscale": [f"backup-{r['id']}" for r in sorted(rows, key=lambda r: r["expires_at"])],
        "backup-regular": [],
        "backup-images": [],
    }
    # Oldest first: the two newest upscales wait for the next call.
    assert sorted(int(r["source_id"]) for r in rows) == list(range(1, 11))


BAD_BODIES: list[tuple[Any, str]] = [
    ({"type": "gifs", "limit": 10}, "type must be one of upscale, regular, images, all"),
    ({"type": "upscale", "limit": -1}, "limit must be between 1 and 100000"),
    ({"type": "upscale", "limit": 0}, "limit must be between 1 and 100000"),
    ({"type": "upscale", "limit": 10**9}, "limit must be between 1 and 100000"),
    ({"type": "upscale", "limit": "10"}, "limit must be a whole number"),
    ({"type": "upscale", "limit": 2.5}, "limit must be a whole number"),
    ({"type": "upscale", "limit": True}, "limit must be a whole number"),
    ({"type": "upscale"}, "limit must be a whole number"),
    ({"limit": 10}, "type must be one of"),
    ({"type": "upscale", "limit": 10, "force": True}, "unknown fields: force"),
    ({"type": "upscale", "limit": 10, "dry_run": "yes"}, "dry_run must be true or false"),
    ([1, 2], "body must be a JSON object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_backfill_input_is_a_clear_400_and_changes_nothing(
    client: FlaskClient, conn: Connection, cdn: FakeCdn, redis: Redis, body: Any, message: str
) -> None:
    add_video(conn, cdn, 1, upscale_size=1000)
    response = client.post("/backfill", json=body, headers=admin_headers())
    assert response.status_code == 400
    assert response.json is not None and message in response.json["error"]
    assert ledger_rows(conn) == []
    assert all(ids == [] for ids in queued_job_ids(redis).values())


def test_not_json_is_a_400(client: FlaskClient) -> None:
    response = client.post("/backfill", data="type=upscale", headers=admin_headers())
    assert response.status_code == 400


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eDp3cm9uZw=="},
     {"Authorization": ADMIN_TOKEN}],
)
def test_admin_endpoints_need_the_token(
    client: FlaskClient, conn: Connection, cdn: FakeCdn, redis: Redis, headers: dict[str, str]
) -> None:
    add_video(conn, cdn, 1, upscale_size=1000)
    response = client.post("/backfill", json={"type": "upscale", "limit": 10}, headers=headers)
    assert response.status_code == 401
    assert response.json == {"error": "missing or wrong admin token"}
    assert client.get("/status", headers=headers).status_code == 401
    assert client.get("/rq/", headers=headers).status_code == 401
    assert ledger_rows(conn) == []
    assert all(ids == [] for ids in queued_job_ids(redis).values())


def test_admin_api_is_off_without_a_configured_token(config: Config) -> None:
    client = create_app_for(config.replace(admin_token=None)).test_client()
    response = client.post("/backfill", json={"type": "upscale", "limit": 1},
                           headers={"Authorization": "Bearer "})
    assert response.status_code == 403
    assert response.json == {"error": "the admin API is disabled: set FALBACK_ADMIN_TOKEN"}
    assert client.get("/rq/").status_code == 403


def test_rq_dashboard_loads_behind_basic_auth(client: FlaskClient, conn: Connection, cdn: FakeCdn) -> None:
    add_video(conn, cdn, 1, upscale_size=1000)
    client.post("/backfill", json={"type": "all", "limit": 10}, headers=admin_headers())
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()}
    page = client.get("/rq/", headers=basic)
    assert page.status_code == 200 and b"<title>RQ dashboard</title>" in page.data
    queues = client.get("/rq/0/data/queues.json", headers=basic)
    assert queues.status_code == 200 and queues.json is not None
    counts = {q["name"]: q["count"] for q in queues.json["queues"]}
    assert counts == {"backup-upscale": 1, "backup-regular": 1}


def test_status_reports_per_type(client: FlaskClient, conn: Connection, cdn: FakeCdn) -> None:
    add_video(conn, cdn, 1, size=100, upscale_size=1000)
    add_image(conn, cdn, 1, size=10)
    client.post("/backfill", json={"type": "upscale", "limit": 10}, headers=admin_headers())
    response = client.get("/status", headers=admin_headers())
    assert response.status_code == 200 and response.json is not None
    ledger = response.json["ledger"]
    assert [(r["kind"], r["files"], r["in_progress"], r["bytes_remaining"]) for r in ledger] == [
        ("upscale", 1, 1, 1000)
    ]
    assert sorted((r["kind"], r["files"], r["bytes"]) for r in response.json["not_in_ledger"]) == [
        ("image", 1, 10), ("regular", 1, 100)
    ]
    assert response.json["queues"]["backup-upscale"] == 1


def test_oversized_body_is_413(client: FlaskClient) -> None:
    response = client.post("/backfill", data=b"x" * (2 * 1024 * 1024), headers={
        **admin_headers(), "Content-Type": "application/json"})
    assert response.status_code == 413

"""The web app: /healthz, the admin API (/backfill, /status) and /rq behind the token."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from werkzeug.test import TestResponse

from core.config import Config
from db.connection import Connection
from jobs.queues import QUEUE_NAMES
from tests.fakes.cdn import FakeCdn
from tests.fakes.jwks_server import JwksServer, jwks, signed_headers
from tests.support.rows import add_image, add_video, ledger_rows
from tests.support.web import ADMIN_TOKEN, admin_headers, create_app_for


def queued_job_ids(redis: Redis) -> dict[str, list[str]]:
    return {
        name: [j.decode() if isinstance(j, bytes) else j for j in redis.lrange(f"rq:queue:{name}", 0, -1)]
        for name in QUEUE_NAMES
    }


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


def test_the_users_backfill_call_dispatches_by_priority(
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
    assert response.json["dispatched"] == 2
    rows = ledger_rows(conn)
    # The backlog is in Postgres; the queue holds its window (2: no worker yet), the two
    # closest to expiry.
    by_expiry = sorted(rows, key=lambda r: r["expires_at"])
    assert [r["status"] for r in by_expiry] == ["queued"] * 2 + ["pending"] * 8
    assert queued_job_ids(redis) == {
        "backup-upscale": [f"backup-{r['id']}" for r in by_expiry[:2]],
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
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic eDp3cm9uZw=="},
        {"Authorization": ADMIN_TOKEN},
    ],
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
    response = client.post(
        "/backfill", json={"type": "upscale", "limit": 1}, headers={"Authorization": "Bearer "}
    )
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
    response = client.get("/api/status", headers=admin_headers())
    assert response.status_code == 200 and response.json is not None
    kinds = {k["kind"]: k for k in response.json["kinds"]}
    assert (
        kinds["upscale"]["files"],
        kinds["upscale"]["in_progress"],
        kinds["upscale"]["bytes_remaining"],
    ) == (1, 1, 1000)
    assert [(kinds[k]["not_in_ledger"], kinds[k]["bytes_total"]) for k in ("regular", "image")] == [
        (1, 100),
        (1, 10),
    ]
    assert response.json["queues"]["backup-upscale"] == 1


def test_oversized_body_is_413(client: FlaskClient) -> None:
    response = client.post(
        "/backfill",
        data=b"x" * (2 * 1024 * 1024),
        headers={**admin_headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 413


# --- bad input is a 4xx, always ---------------------------------------------------------

APP_SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def web_client(config: Config, key: Ed25519PrivateKey) -> Iterator[FlaskClient]:
    """Both webhooks enabled: fal's keys served locally, the app webhook's secret set."""
    with JwksServer(jwks(key)) as jwks_server:
        yield create_app_for(
            config.replace(fal_jwks_urls=(jwks_server.url,), app_webhook_secret=APP_SECRET)
        ).test_client()


def post_json_endpoint(
    client: FlaskClient, key: Ed25519PrivateKey, path: str, raw: bytes, query: str = ""
) -> TestResponse:
    """POST `raw` to `path`, authenticated the way that endpoint wants."""
    headers = {
        "/backfill": admin_headers(),
        "/webhooks/app": {"X-Falback-Secret": APP_SECRET},
        "/webhooks/fal": signed_headers(key, raw, timestamp=int(time.time()), request_id="req-fuzz"),
    }[path]
    return client.post(path + query, data=raw, headers=headers, content_type="application/json")


JSON_ENDPOINTS = ["/backfill", "/webhooks/app", "/webhooks/fal"]
DEEP = 100_000


@pytest.mark.parametrize("field", ["type", "limit"])
@pytest.mark.parametrize("value", [["upscale"], {"upscale": 1}, [[[]]], {}])
def test_backfill_fields_that_are_arrays_or_objects_are_400(
    client: FlaskClient, redis: Redis, field: str, value: Any
) -> None:
    body = {"type": "upscale", "limit": 10, field: value}
    response = client.post("/backfill", json=body, headers=admin_headers())
    assert response.status_code == 400 and response.json is not None
    assert response.json["error"].startswith(f"{field} must be ")
    assert all(ids == [] for ids in queued_job_ids(redis).values())


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "raw",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"type": "all", "limit": ' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"request_id": "r", "status": "OK", "payload": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}",
        # Shallow enough to parse, too deep to print in an error message.
        b'{"type": ' + b"[" * 900 + b"]" * 900 + b', "limit": ' + b"[" * 900 + b"]" * 900 + b"}",
    ],
    ids=["array", "in a field", "object", "parses"],
)
def test_deeply_nested_json_is_400_on_every_json_endpoint(
    web_client: FlaskClient, key: Ed25519PrivateKey, conn: Connection, path: str, raw: bytes
) -> None:
    response = post_json_endpoint(web_client, key, path, raw)
    assert response.status_code == 400 and response.json is not None, response.data[:200]
    assert ledger_rows(conn) == []


DASHBOARD_BAD_URLS = [
    ("GET", "/rq/0/view/job/no-such-job", 404),
    ("GET", "/rq/0/data/job/no-such-job.json", 404),
    ("GET", "/rq/0/view/job/not%20an%20id", 404),
    ("GET", "/rq/0/data/job/..%2F.json", 404),
    ("GET", "/rq/7/view", 404),
    ("GET", "/rq/7/data/queues.json", 404),
    ("GET", "/rq/0/data/jobs/backup-regular/nonsense/8/asc/1.json", 404),
    ("GET", "/rq/0/view/jobs/backup-regular/nonsense/8/asc/1", 404),
    ("GET", "/rq/0/data/jobs/backup-regular/failed/0/asc/1.json", 400),
    ("GET", "/rq/0/view/jobs/backup-regular/queued/0/asc/1", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/failed/-1/asc/1.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/failed/8/asc/0.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/queued/eight/asc/1.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/queued/8/asc/one.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/queued/8/asc/%C2%B2.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/failed/99999999999999999999/asc/1.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/failed/8/asc/99999999999999999999.json", 400),
    ("GET", "/rq/0/data/jobs/backup-regular/queued/8/sideways/1.json", 400),
    ("POST", "/rq/job/no-such-job/requeue", 404),
    ("POST", "/rq/job/not%20an%20id/delete", 404),
    ("POST", "/rq/queue/backup-regular/nonsense/empty", 404),
]


@pytest.mark.parametrize(("method", "url", "status"), DASHBOARD_BAD_URLS)
def test_dashboard_bad_arguments_are_4xx(client: FlaskClient, method: str, url: str, status: int) -> None:
    response = client.open(url, method=method, headers={**BASIC, "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == status and response.json is not None, response.data[:300]
    assert response.json["error"]


def test_requeueing_a_job_that_has_not_failed_is_409(
    client: FlaskClient, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    add_video(conn, cdn, 1)
    client.post("/backfill", json={"type": "all", "limit": 10}, headers=admin_headers())
    [job_id] = queued_job_ids(redis)["backup-regular"]
    response = client.post(f"/rq/job/{job_id}/requeue", headers={**BASIC, "Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 409 and response.json is not None
    assert queued_job_ids(redis)["backup-regular"] == [job_id]


def test_http_errors_are_json(client: FlaskClient) -> None:
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json is not None and missing.json["error"]
    wrong_method = client.get("/backfill", headers=admin_headers())
    assert wrong_method.status_code == 405 and wrong_method.json is not None
    assert "POST" in wrong_method.headers["Allow"]


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(["upscale", "regular", "images", "all", "OK", "INSERT", "gen_videos"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "limit",
                    "dry_run",
                    "table",
                    "record",
                    "id",
                    "request_id",
                    "status",
                    "payload",
                    "video",
                    "url",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"type":' + b"[" * n + b"]" * n + b',"limit":1}'),
    st.binary(max_size=64),
)
_query = st.text(
    st.characters(min_codepoint=32, exclude_categories=["Cs"], exclude_characters="#"), max_size=40
)


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(JSON_ENDPOINTS), raw=_bodies, query=_query)
def test_fuzz_json_endpoints_never_5xx(
    web_client: FlaskClient, key: Ed25519PrivateKey, path: str, raw: bytes, query: str
) -> None:
    response = post_json_endpoint(web_client, key, path, raw, "?" + quote(query, safe="=&%"))
    event(f"{path} -> {response.status_code}")
    assert response.status_code < 500, response.data[:300]


_segment = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "8",
            "200",
            "99999999999999999999",
            "asc",
            "dsc",
            "queued",
            "failed",
            "finished",
            "backup-regular",
            "x",
            "",
            "%00",
            "..",
            "%2F",
            "a b",
        ]
    ),
    st.text(max_size=12),
)
_dashboard_routes = st.sampled_from(
    [
        "GET /rq/{0}/view/jobs/{1}/{2}/{3}/{4}/{5}",
        "GET /rq/{0}/data/jobs/{1}/{2}/{3}/{4}/{5}.json",
        "GET /rq/{0}/view/job/{1}",
        "GET /rq/{0}/data/job/{1}.json",
        "GET /rq/{0}/view",
        "GET /rq/{0}/data/queues.json",
        "GET /rq/{0}/data/workers.json",
        "GET /rq/{0}/view/workers",
        "POST /rq/job/{1}/delete",
        "POST /rq/job/{1}/requeue",
        "GET /rq/requeue/{1}",
        "POST /rq/queue/{1}/{2}/empty",
        "POST /rq/queue/{1}/compact",
    ]
)


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(route=_dashboard_routes, segments=st.lists(_segment, min_size=6, max_size=6), query=_query)
def test_fuzz_dashboard_never_5xx(client: FlaskClient, route: str, segments: list[str], query: str) -> None:
    method, template = route.split(" ")
    url = template.format(*(quote(s, safe="%") for s in segments)) + "?" + quote(query, safe="=&%")
    response = client.open(url, method=method, headers={**BASIC, "Sec-Fetch-Site": "same-origin"})
    event(f"{route} -> {response.status_code}")
    assert response.status_code < 500, (url, response.data[:300])


# --- cross-site requests with the browser's Basic credentials ---------------------------

HOST = "localhost"  # the test client's Host
CROSS_SITE = [
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": f"http://{HOST}"},  # a sibling subdomain
    {"Origin": "https://attacker.example"},
    {"Origin": "null"},
    {"Referer": "https://attacker.example/page"},
    {"Origin": "https://attacker.example", "Referer": f"http://{HOST}/rq/"},
    {"Referer": "http://[broken"},
    {},  # no browser page to vouch for it
]
SAME_ORIGIN = [
    {"Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed into the address bar
    {"Origin": f"http://{HOST}"},
    {"Origin": f"https://{HOST}:443"},  # behind a TLS proxy that keeps Host
    {"Referer": f"http://{HOST}/rq/0/view/jobs"},
]


@pytest.fixture
def queued_and_failed(client: FlaskClient, conn: Connection, cdn: FakeCdn, redis: Redis) -> tuple[str, str]:
    """One queued job (backup-regular) and one failed one (backup-upscale)."""
    add_video(conn, cdn, 1, upscale_size=1000)
    client.post("/backfill", json={"type": "all", "limit": 10}, headers=admin_headers())
    [queued] = queued_job_ids(redis)["backup-regular"]
    [failed] = queued_job_ids(redis)["backup-upscale"]
    job = Job.fetch(failed, connection=redis)
    Queue("backup-upscale", connection=redis).remove(failed)
    FailedJobRegistry("backup-upscale", connection=redis).add(job, exc_string="boom")
    return queued, failed


def dashboard_state(redis: Redis, queued: str, failed: str) -> tuple[object, ...]:
    return (
        queued_job_ids(redis),
        redis.exists(f"rq:job:{queued}"),
        FailedJobRegistry("backup-upscale", connection=redis).get_job_ids(cleanup=False),
    )


def state_changes(queued: str, failed: str) -> list[tuple[str, str]]:
    return [
        ("POST", f"/rq/job/{queued}/delete"),
        ("POST", f"/rq/job/{failed}/requeue"),
        ("GET", "/rq/requeue/backup-upscale"),  # "requeue all" also answers GET
        ("POST", "/rq/requeue/backup-upscale"),
        ("POST", "/rq/queue/backup-regular/queued/empty"),
        ("POST", "/rq/queue/backup-upscale/failed/empty"),
        ("POST", "/rq/queue/backup-regular/compact"),
    ]


@pytest.mark.parametrize("origin", CROSS_SITE)
def test_cross_site_dashboard_actions_with_basic_are_refused(
    client: FlaskClient, redis: Redis, queued_and_failed: tuple[str, str], origin: dict[str, str]
) -> None:
    queued, failed = queued_and_failed
    before = dashboard_state(redis, queued, failed)
    for method, url in state_changes(queued, failed):
        response = client.open(url, method=method, headers={**BASIC, **origin})
        assert response.status_code == 403, (method, url, response.data[:200])
        assert response.json is not None and "cross-site request refused" in response.json["error"]
    assert dashboard_state(redis, queued, failed) == before
    # Reading stays open: another site cannot read the answers anyway.
    assert client.get("/rq/", headers={**BASIC, **origin}).status_code == 200
    assert client.get("/rq/0/data/queues.json", headers={**BASIC, **origin}).status_code == 200


@pytest.mark.parametrize("origin", SAME_ORIGIN)
def test_the_dashboards_own_pages_can_change_state(
    client: FlaskClient, redis: Redis, queued_and_failed: tuple[str, str], origin: dict[str, str]
) -> None:
    queued, failed = queued_and_failed
    headers = {**BASIC, **origin}
    assert client.post(f"/rq/job/{failed}/requeue", headers=headers).json == {"status": "OK"}
    assert client.post(f"/rq/job/{queued}/delete", headers=headers).json == {"status": "OK"}
    assert queued_job_ids(redis)["backup-upscale"] == [failed]
    assert queued_job_ids(redis)["backup-regular"] == []


@pytest.mark.parametrize("origin", CROSS_SITE)
def test_cross_site_backfill_with_basic_is_refused(
    client: FlaskClient, conn: Connection, cdn: FakeCdn, redis: Redis, origin: dict[str, str]
) -> None:
    add_video(conn, cdn, 1, upscale_size=1000)
    response = client.post("/backfill", json={"type": "all", "limit": 10}, headers={**BASIC, **origin})
    assert response.status_code == 403
    assert ledger_rows(conn) == []
    assert all(ids == [] for ids in queued_job_ids(redis).values())
    # /status only reads.
    assert client.get("/status", headers={**BASIC, **origin}).status_code == 200


def test_backfill_with_basic_from_the_same_origin_and_bearer_from_scripts_work(
    client: FlaskClient, conn: Connection, cdn: FakeCdn
) -> None:
    add_video(conn, cdn, 1, upscale_size=1000)
    same_origin = {**BASIC, "Origin": f"http://{HOST}"}
    body = {"type": "upscale", "limit": 10}
    assert client.post("/backfill", json=body, headers=same_origin).status_code == 200
    # A script: Bearer, no Origin, no Sec-Fetch-Site. A browser never sends Bearer by itself.
    body = {"type": "regular", "limit": 10}
    assert client.post("/backfill", json=body, headers=admin_headers()).status_code == 200
    assert len(ledger_rows(conn)) == 2


def test_the_dashboard_cannot_be_framed(client: FlaskClient) -> None:
    page = client.get("/rq/", headers=BASIC)
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"

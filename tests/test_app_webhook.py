"""POST /webhooks/app: Standard Webhooks signatures or the Supabase secret header, the
Supabase Database Webhook body, rows not yet visible, outages, and a fuzz run."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis
from werkzeug.test import TestResponse

from core.config import Config
from db.connection import Connection, fetch_one
from tests.fakes.cdn import FakeCdn
from tests.support.app_rows import backup_columns, copied_unlinked, copied_video, execute
from tests.support.rows import add_video, ledger_rows
from tests.support.servers import Servers
from tests.support.web import create_app_for
from tests.support.workers import run_worker

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()


@pytest.fixture
def app_config(config: Config) -> Config:
    return config.replace(app_webhook_secret=SECRET)


@pytest.fixture
def app_client(app_config: Config) -> FlaskClient:
    return create_app_for(app_config).test_client()


def standard_headers(
    body: bytes, *, secret: str = SECRET, msg_id: str = "msg_1", at: float | None = None, extra: str = ""
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    signature = (extra + " " if extra else "") + "v1," + base64.b64encode(mac).decode()
    return {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}


def supabase_event(
    type_: str, table: str, record: dict[str, Any] | None, old: dict[str, Any] | None = None
) -> bytes:
    """The body a Supabase Database Webhook sends (supabase_functions.http_request)."""
    return json.dumps(
        {"type": type_, "table": table, "schema": "public", "record": record, "old_record": old}
    ).encode()


def post(client: FlaskClient, body: bytes, headers: dict[str, str] | None = None) -> TestResponse:
    return client.post(
        "/webhooks/app",
        data=body,
        headers=standard_headers(body) if headers is None else headers,
        content_type="application/json",
    )


def queue_lengths(redis: Redis) -> dict[str, int]:
    names = ("backup-upscale", "backup-regular", "backup-images")
    return {q: int(redis.llen(f"rq:queue:{q}")) for q in names}


def video_record(conn: Connection, video_id: int) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id, video_url, file_size, upscale_video_url, upscale_file_size,"
            " created_at::text FROM gen_videos WHERE id = %s",
            (video_id,),
        )
        row = fetch_one(cur)
    conn.commit()
    assert row is not None
    return row


def test_a_signed_insert_for_an_existing_row_is_backed_up(
    app_client: FlaskClient, app_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    video_id = add_video(conn, cdn, 1, size=60_000, upscale_size=120_000)
    body = supabase_event("INSERT", "gen_videos", video_record(conn, video_id))
    response = post(app_client, body)
    assert response.status_code == 200, response.json
    assert response.json == {
        "type": "INSERT",
        "table": "gen_videos",
        "id": str(video_id),
        "files": 2,
        "queued": 2,
    }
    assert queue_lengths(redis) == {"backup-upscale": 1, "backup-regular": 1, "backup-images": 0}
    # The same event again (Supabase has no retry, but the user's backend may): no new job.
    assert post(app_client, body).json["queued"] == 0  # type: ignore[index]
    run_worker(app_config)
    rows = ledger_rows(conn)
    assert sorted((r["kind"], r["status"], r["source_id"]) for r in rows) == [
        ("regular", "done", str(video_id)),
        ("upscale", "done", str(video_id)),
    ]
    with conn.cursor() as cur:
        cur.execute("SELECT backup_status FROM gen_videos WHERE id = %s", (video_id,))
        assert fetch_one(cur) == {"backup_status": "completed"}
    conn.commit()


def test_supabase_secret_header(app_client: FlaskClient, conn: Connection, cdn: FakeCdn) -> None:
    image_url = cdn.add("/files/b/i/one.png", 1000)
    body = supabase_event(
        "UPDATE",
        "gen_images",
        {"id": 7, "image_url": image_url, "file_size": 1000},
        old={"id": 7, "image_url": None},
    )
    response = post(app_client, body, {"X-Falback-Secret": SECRET})
    assert response.status_code == 200, response.json
    [row] = ledger_rows(conn)
    # Row 7 is not in gen_images here: the ledger row comes from the record, linked.
    assert (row["kind"], row["source_table"], row["source_id"], row["variant"], row["expected_size"]) == (
        "image",
        "gen_images",
        "7",
        "image",
        1000,
    )
    assert row["status"] == "queued"


def test_a_row_not_yet_visible_is_taken_from_the_record_and_links_a_fal_row(
    app_client: FlaskClient, conn: Connection
) -> None:
    url = "https://v3.fal.media/files/b/x/early.mp4"
    with conn.cursor() as cur:  # what a fal webhook without a link made earlier
        cur.execute(
            "INSERT INTO ledger (source_url, kind, fal_request_id) VALUES (%s, 'regular', 'r1')", (url,)
        )
    conn.commit()
    record = {
        "id": 999,
        "video_url": url,
        "upscale_video_url": "not a url",
        "file_size": 5,
        "created_at": "2026-11-20T10:00:00.123456+00:00",
    }
    response = post(app_client, supabase_event("INSERT", "gen_videos", record))
    assert response.status_code == 200 and response.json is not None
    assert response.json["files"] == 1
    [row] = ledger_rows(conn)
    assert (row["source_table"], row["source_id"], row["variant"], row["fal_request_id"]) == (
        "gen_videos",
        "999",
        "regular",
        "r1",
    )


def test_an_update_naming_a_file_already_copied_updates_the_app_row(
    app_client: FlaskClient, app_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis
) -> None:
    video = copied_video(conn, app_config, redis, cdn, 1)
    upscaled = cdn.add("/files/b/t/video-1_up.mp4", 80_000, seed=77)
    copy = copied_unlinked(conn, app_config, redis, upscaled)
    execute(conn, "UPDATE gen_videos SET upscale_video_url = %s WHERE id = %s", upscaled, video)
    response = post(app_client, supabase_event("UPDATE", "gen_videos", video_record(conn, video)))
    assert response.json == {
        "type": "UPDATE",
        "table": "gen_videos",
        "id": str(video),
        "files": 2,
        "queued": 0,
    }
    assert backup_columns(conn, video) == {"backup_status": "completed", "backup_storage_url": copy}
    # Told again, nothing changed: the user's row is not rewritten.
    before = row_version(conn, video)
    assert post(app_client, supabase_event("UPDATE", "gen_videos", video_record(conn, video))).json
    assert row_version(conn, video) == before


def row_version(conn: Connection, video: int) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT xmin::text AS v FROM gen_videos WHERE id = %s", (video,))
        row = fetch_one(cur)
    conn.commit()
    assert row is not None
    return str(row["v"])


def test_several_signatures_during_a_key_rotation(app_client: FlaskClient, conn: Connection) -> None:
    body = supabase_event("INSERT", "gen_images", {"id": 1, "image_url": "https://v3.fal.media/a.png"})
    old = standard_headers(body, secret=OTHER_SECRET)["webhook-signature"]
    headers = standard_headers(body, extra=f"v1a,xyz {old}")
    assert post(app_client, body, headers).status_code == 200
    assert len(ledger_rows(conn)) == 1


def test_delete_changes_nothing(app_client: FlaskClient, conn: Connection) -> None:
    body = supabase_event("DELETE", "gen_videos", None, old={"id": 3, "video_url": "https://x/y.mp4"})
    response = post(app_client, body)
    assert response.status_code == 200 and response.json is not None and response.json["files"] == 0
    assert ledger_rows(conn) == []


GOOD = supabase_event("INSERT", "gen_images", {"id": 1, "image_url": "https://v3.fal.media/a.png"})


@pytest.mark.parametrize(
    "case",
    [
        "no auth",
        "wrong secret",
        "tampered body",
        "301 s old",
        "301 s ahead",
        "no webhook-id",
        "no webhook-timestamp",
        "wrong secret header",
        "empty signature",
        "v2 only",
    ],
)
def test_bad_auth_is_401_and_writes_nothing(case: str, app_client: FlaskClient, conn: Connection) -> None:
    body, headers = GOOD, standard_headers(GOOD)
    if case == "no auth":
        headers = {}
    elif case == "wrong secret":
        headers = standard_headers(GOOD, secret=OTHER_SECRET)
    elif case == "tampered body":
        body = GOOD.replace(b"a.png", b"b.png")
    elif case.startswith("301 s"):
        headers = standard_headers(GOOD, at=time.time() + (-301 if "old" in case else 301))
    elif case.startswith("no webhook"):
        del headers[case[3:]]
    elif case == "wrong secret header":
        headers = {"X-Falback-Secret": OTHER_SECRET}
    elif case == "empty signature":
        headers["webhook-signature"] = ""
    elif case == "v2 only":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    response = post(app_client, body, headers)
    assert response.status_code == 401, response.json
    assert ledger_rows(conn) == []


def test_disabled_without_a_secret(client: FlaskClient, conn: Connection) -> None:
    assert post(client, GOOD).status_code == 403
    assert ledger_rows(conn) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "body is not valid JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"type": "TRUNCATE", "table": "gen_images", "record": {"id": 1}}', "type must be"),
        (b'{"type": "INSERT", "table": "users", "record": {"id": 1}}', "table must be one of"),
        (
            b'{"type": "INSERT", "table": "gen_images", "schema": "auth", "record": {"id": 1}}',
            "schema must be public",
        ),
        (b'{"type": "INSERT", "table": "gen_images", "record": null}', "record (old_record"),
        (
            b'{"type": "INSERT", "table": "gen_images", "record": {"image_url": "https://a/b"}}',
            "record.id must be",
        ),
        (b'{"type": "INSERT", "table": "gen_images", "record": {"id": true}}', "record.id must be"),
        (b'{"type": "INSERT", "table": "gen_images", "record": {"id": "1; drop"}}', "record.id must be"),
    ],
)
def test_malformed_is_400_and_writes_nothing(
    body: bytes, message: str, app_client: FlaskClient, conn: Connection
) -> None:
    response = post(app_client, body)
    assert response.status_code == 400 and response.json is not None
    assert message in response.json["error"]
    assert ledger_rows(conn) == []


def test_too_large_is_413(app_client: FlaskClient, conn: Connection) -> None:
    body = supabase_event("INSERT", "gen_images", {"id": 1, "blob": "x" * (1024 * 1024)})
    assert post(app_client, body).status_code == 413
    assert ledger_rows(conn) == []


def test_postgres_down_is_503(app_config: Config) -> None:
    assert app_config.database_url
    broken = app_config.database_url.replace("/test_", "/missing_")
    client = create_app_for(app_config.replace(database_url=broken)).test_client()
    assert post(client, GOOD).status_code == 503


def test_redis_down_is_200_and_rows_stay_pending(
    app_client: FlaskClient, conn: Connection, servers: Servers, redis: Redis
) -> None:
    servers.redis.stop()
    try:
        response = post(app_client, GOOD)
    finally:
        servers.redis.start()
    assert response.status_code == 200 and response.json is not None and response.json["queued"] == 0
    assert [r["status"] for r in ledger_rows(conn)] == ["pending"]


# --- fuzz ------------------------------------------------------------------------------


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` four times in five, so that most examples get past validation."""
    # Hypothesis favours the first (simplest) choice, so the good one comes first.
    return st.sampled_from([True, True, True, True, False]).flatmap(lambda ok: good if ok else bad)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "https://v3.fal.media/files/a.mp4",
            "http://\x00/x",
            "https://\ud800",
            "2026-01-01T00:00:00+00:00",
            "not a date",
            "9999-12-31T23:59:59-23:59",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_records = st.fixed_dictionaries(
    {
        "id": mostly(
            st.integers(1, 50), st.integers(min_value=-5, max_value=2**64) | st.text(max_size=70) | st.none()
        )
    },
    optional={
        k: mostly(
            st.sampled_from(["https://v3.fal.media/files/a.mp4", "https://v3.fal.media/files/b.png"])
            | st.integers(0, 10**6),
            _values,
        )
        for k in (
            "video_url",
            "upscale_video_url",
            "image_url",
            "file_size",
            "upscale_file_size",
            "created_at",
        )
    },
)
_events = st.fixed_dictionaries(
    {
        "type": mostly(st.sampled_from(["INSERT", "UPDATE", "DELETE"]), st.text(max_size=6)),
        "table": mostly(st.sampled_from(["gen_videos", "gen_images"]), st.text(max_size=6)),
        "record": mostly(_records, _values),
    },
    optional={"schema": st.sampled_from(["public", "other"]), "old_record": _records | _values},
)
_raw = mostly(_events.map(lambda e: json.dumps(e).encode()), st.binary(max_size=200))
_auth = st.sampled_from(
    [
        "std-good",
        "none",
        "header-good",
        "std-wrong-secret",
        "std-good",
        "std-stale",
        "header-good",
        "header-wrong",
        "std-good",
        "garbage",
    ]
)


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=_raw,
    auth=_auth,
    garbage=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "X-Falback-Secret"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
    ),
)
def test_fuzz_never_5xx_and_unauthenticated_never_writes(
    app_client: FlaskClient, conn: Connection, raw: bytes, auth: str, garbage: dict[str, str]
) -> None:
    before = len(ledger_rows(conn))
    headers = {
        "none": {},
        "garbage": garbage,
        "std-good": standard_headers(raw),
        "std-wrong-secret": standard_headers(raw, secret=OTHER_SECRET),
        "std-stale": standard_headers(raw, at=time.time() - 400),
        "header-good": {"X-Falback-Secret": SECRET},
        "header-wrong": {"X-Falback-Secret": SECRET[:-2]},
    }[auth]
    response = post(app_client, raw, headers)
    event(f"{auth} -> {response.status_code} {(response.json or {}).get('error', '')[:30]}")
    assert response.status_code < 500, response.json
    if auth not in ("std-good", "header-good"):
        assert response.status_code == 401
        assert len(ledger_rows(conn)) == before

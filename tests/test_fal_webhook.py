"""POST /webhooks/fal: signatures, payload shapes, idempotency, outages, and the issue's
"done when": a signed fal webhook for a new video ends as a verified backup."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis
from werkzeug.test import TestResponse

from core.config import Config, ConfigError
from db.connection import Connection, connect, fetch_all
from jobs.fal_results import fetch_result
from jobs.worker import WorkerContext
from tests.fakes.cdn import FakeCdn
from tests.fakes.fal_queue_server import FalQueueServer
from tests.fakes.jwks_server import JwksServer, jwks, signed_headers
from tests.support.app_rows import backup_columns, copied_video, execute
from tests.support.gunicorn import gunicorn
from tests.support.processes import background, falback
from tests.support.rows import add_video, file_md5, ledger_rows
from tests.support.servers import Servers
from tests.support.wait import wait_for
from tests.support.web import admin_headers, create_app_for
from tests.support.workers import run_worker

PAYLOADS = Path(__file__).parent / "fal_payloads"
USER = "user-1"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def jwks_server(key: Ed25519PrivateKey) -> Iterator[JwksServer]:
    with JwksServer(jwks(key)) as server:
        yield server


@pytest.fixture
def hook_config(config: Config, jwks_server: JwksServer) -> Config:
    return config.replace(fal_jwks_urls=(jwks_server.url,))


@pytest.fixture
def hook_client(hook_config: Config) -> FlaskClient:
    return create_app_for(hook_config).test_client()


def sign(
    key: Ed25519PrivateKey, body: bytes, request_id: str, *, user: str = USER, at: float | None = None
) -> dict[str, str]:
    return signed_headers(
        key, body, timestamp=int(time.time() if at is None else at), request_id=request_id, user_id=user
    )


def encode(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def post(
    client: FlaskClient,
    key: Ed25519PrivateKey,
    body: dict[str, Any] | bytes,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> TestResponse:
    raw = encode(body)
    request_id = json.loads(raw)["request_id"] if headers is None else ""
    return client.post(
        f"/webhooks/fal{query}",
        data=raw,
        headers=headers if headers is not None else sign(key, raw, request_id),
        content_type="application/json",
    )


def counts(conn: Connection) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM ledger) AS ledger,"
            " (SELECT count(*) FROM fal_deliveries) AS deliveries,"
            " (SELECT count(*) FROM webhook_blobs) AS blobs"
        )
        row = fetch_all(cur)[0]
    conn.commit()
    return {k: int(v) for k, v in row.items()}


NOTHING = {"ledger": 0, "deliveries": 0, "blobs": 0}


def deliveries(conn: Connection) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM fal_deliveries ORDER BY id")
        rows = fetch_all(cur)
    conn.commit()
    return rows


def video_webhook(url: str, request_id: str = "req-video-1", **file: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": {"video": {"url": url, "content_type": "video/mp4", **file}},
    }


def queued(redis: Redis, queue: str) -> list[str]:
    return [j.decode() if isinstance(j, bytes) else j for j in redis.lrange(f"rq:queue:{queue}", 0, -1)]


# --- signatures ------------------------------------------------------------------------

BODY = video_webhook("https://v3.fal.media/files/b/x/out.mp4")
RAW = encode(BODY)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("tampered body", 401),
        ("wrong key", 401),
        ("301 s old", 401),
        ("301 s ahead", 401),
        ("no request id", 401),
        ("no user id", 401),
        ("no timestamp", 401),
        ("no signature", 401),
        ("header id differs from body", 401),
        ("wrong user when pinned", 401),
    ],
)
def test_bad_signatures_are_refused_and_write_nothing(
    case: str, status: int, key: Ed25519PrivateKey, hook_config: Config, conn: Connection
) -> None:
    config = hook_config.replace(fal_webhook_user_id="me") if "pinned" in case else hook_config
    client = create_app_for(config).test_client()
    raw, headers = RAW, sign(key, RAW, "req-video-1")
    if case == "tampered body":
        raw = RAW.replace(b"out.mp4", b"evil.mp4")
    elif case == "wrong key":
        headers = sign(Ed25519PrivateKey.generate(), RAW, "req-video-1")
    elif case.startswith("301 s"):
        headers = sign(key, RAW, "req-video-1", at=time.time() + (-301 if "old" in case else 301))
    elif case.startswith("no "):
        name = {
            "request id": "Request-Id",
            "user id": "User-Id",
            "timestamp": "Timestamp",
            "signature": "Signature",
        }[case[3:]]
        del headers[f"X-Fal-Webhook-{name}"]
    elif case == "header id differs from body":
        headers = sign(key, RAW, "req-other")
    response = post(client, key, raw, headers=headers)
    assert response.status_code == status, response.json
    assert counts(conn) == NOTHING


def test_valid_signature_and_pinned_user(
    key: Ed25519PrivateKey, hook_config: Config, conn: Connection
) -> None:
    client = create_app_for(hook_config.replace(fal_webhook_user_id=USER)).test_client()
    response = post(client, key, BODY)
    assert response.status_code == 200, response.json
    assert counts(conn) == {"ledger": 1, "deliveries": 1, "blobs": 0}


def test_header_may_carry_the_gateway_request_id(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    """fal's docs leave open which id a retried run signs; either one of the body's is fine."""
    body = {**BODY, "gateway_request_id": "gw-2"}
    raw = encode(body)
    assert post(hook_client, key, raw, headers=sign(key, raw, "gw-2")).status_code == 200
    assert deliveries(conn)[0]["request_id"] == "req-video-1"


def test_rotated_key_is_fetched_again(
    key: Ed25519PrivateKey, jwks_server: JwksServer, hook_client: FlaskClient, conn: Connection
) -> None:
    assert post(hook_client, key, BODY).status_code == 200
    new_key = Ed25519PrivateKey.generate()
    jwks_server.set_document(jwks(new_key))
    second = video_webhook("https://v3.fal.media/files/b/x/two.mp4", "req-video-2")
    assert post(hook_client, new_key, second).status_code == 200
    assert jwks_server.request_count == 2
    assert counts(conn)["ledger"] == 2


def test_unavailable_keys_answer_503(
    key: Ed25519PrivateKey, jwks_server: JwksServer, hook_client: FlaskClient, conn: Connection
) -> None:
    jwks_server.set_status(500)
    response = post(hook_client, key, BODY)
    assert response.status_code == 503 and response.headers["Retry-After"] == "60"
    assert counts(conn) == NOTHING


def test_webhook_config_is_strict_and_round_trips() -> None:
    env = {
        "FAL_WEBHOOK_USER_ID": "u1",
        "FAL_JWKS_URLS": "https://a.example/jwks.json, http://127.0.0.1:9/j",
        "FAL_KEY": "id:secret",
        "FAL_QUEUE_BASE_URL": "https://queue.example/",
        "FALBACK_MAX_DATA_URI_BYTES": "2048",
        "FALBACK_APP_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 24).decode(),
    }
    config = Config.from_env(env)
    assert config.fal_jwks_urls == ("https://a.example/jwks.json", "http://127.0.0.1:9/j")
    assert config.fal_queue_base_url == "https://queue.example"
    assert "id:secret" not in repr(config) and "whsec_" not in repr(config)
    assert Config.from_env(config.as_env()) == config
    defaults = Config.from_env({})
    assert defaults.fal_jwks_urls[0] == "https://rest.fal.ai/.well-known/jwks.json"
    assert (defaults.fal_key, defaults.fal_webhook_user_id, defaults.app_webhook_secret) == (None,) * 3
    assert (defaults.fal_queue_base_url, defaults.max_data_uri_bytes) == ("https://queue.fal.run", 10 << 20)
    for name, value, message in [
        ("FAL_JWKS_URLS", "rest.fal.ai/jwks", "is not an http(s) URL"),
        ("FAL_QUEUE_BASE_URL", "https://a, https://b", "must be one URL"),
        ("FALBACK_MAX_DATA_URI_BYTES", "100", "must be at least 1024"),
        ("FALBACK_MAX_DATA_URI_BYTES", str(65 << 20), "must be at most"),
        ("FALBACK_APP_WEBHOOK_SECRET", "hunter2", "must be whsec_ followed by base64"),
        ("FALBACK_APP_WEBHOOK_SECRET", "whsec_c2hvcnQ=", "at least 16 random bytes"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Config.from_env({name: value})


# --- payload shapes --------------------------------------------------------------------

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
F = "https://v3.fal.media/files/"
# fixture -> [(kind, source_url, file_name, expected_size)] in payload order
EXPECTED: dict[str, list[tuple[str, str, str | None, int | None]]] = {
    "bare_url_strings": [
        ("regular", F + "tiger/tV7YiB1k0c5ZqL2HrHn9m_output.mp4", None, None),
        ("image", F + "tiger/0cXh9Tq3b8sK1nF2vWz4p_thumbnail.jpg", None, None),
    ],
    "clarity_upscaler_image": [
        ("image", F + "rabbit/Fh5Qg9Ky1i0xHFi4b3JXp_upscaled.png", "upscaled.png", 6912348)
    ],
    "error_422": [],
    "flux_images": [("image", "https://url.to/image.png", "image.png", 1824075)],
    "kling_video": [
        (
            "regular",
            "https://v2.fal.media/files/fef1bb3a/f2xu0GkqC6jT1lzbxnZzr_output.mp4",
            "output.mp4",
            3149129,
        )
    ],
    "payload_error": [],
    "stable_audio": [
        ("image", F + "koala/7pV3o0aF4Jqk7DTlw1G7V_tmpq8yr4lbt.wav", "tmpq8yr4lbt.wav", 5292044)
    ],
    "success_error_null": [("image", F + "elephant/k3yV0pS1lq0cUoY5T8fGd.jpeg", None, None)],
    "sync_mode_data_uri": [
        (
            "image",
            "blob:sha256:" + hashlib.sha256(PNG).hexdigest(),
            hashlib.sha256(PNG).hexdigest()[:16] + ".png",
            len(PNG),
        )
    ],
    "training_lora": [],
    "transpixar_videos": [
        ("regular", F + "lion/9sQ2kq0V0ffZ0oNNJpD3r_rgb.mp4", "rgb.mp4", 1055236),
        ("regular", F + "lion/Xw3aJd7_YpNQ5ncLh5oPz_alpha.mp4", "alpha.mp4", 412088),
    ],
    "trellis_3d": [
        ("image", F + "zebra/mWm3qGz6rXG0W1k7UjB2n_model.glb", "model.glb", 2261312),
        ("image", F + "zebra/Q0tBq7x2GZ0X9uE8s1cKh_texture_0", "texture_0", None),
    ],
    "video_upscaler": [
        ("upscale", F + "penguin/ztj_LB4gQlW6HIfVs8zX4_upscaled.mp4", "upscaled.mp4", 187446211)
    ],
}


def test_every_fixture_is_covered() -> None:
    assert sorted(p.stem for p in PAYLOADS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_payload_shapes_make_the_right_ledger_rows(
    name: str, key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection, redis: Redis
) -> None:
    raw = (PAYLOADS / f"{name}.json").read_bytes()
    request_id = json.loads(raw)["request_id"]
    response = post(hook_client, key, raw)
    assert response.status_code == 200, response.json
    rows = ledger_rows(conn)
    assert [(r["kind"], r["source_url"], r["file_name"], r["expected_size"]) for r in rows] == EXPECTED[name]
    assert all(r["fal_request_id"] == request_id and r["source_table"] is None for r in rows)
    assert all(r["status"] == "queued" for r in rows)
    now = time.time()
    for r in rows:
        assert abs(r["source_created_at"].timestamp() - now) < 60
        assert r["expires_at"] - r["source_created_at"] == timedelta(days=7)
    [delivery] = deliveries(conn)
    assert delivery["request_id"] == request_id and delivery["files"] == len(rows)
    assert delivery["resolved"] is (name != "payload_error")
    jobs = sum(len(queued(redis, q)) for q in ("backup-upscale", "backup-regular", "backup-images"))
    assert jobs == len(rows)
    if name == "sync_mode_data_uri":
        with conn.cursor() as cur:
            cur.execute("SELECT data, size, content_type FROM webhook_blobs")
            [blob] = fetch_all(cur)
        assert bytes(blob["data"]) == PNG and blob["size"] == len(PNG)
        assert blob["content_type"] == "image/png"
    if name == "training_lora":
        assert "payload.diffusers_lora_file: not media" in delivery["note"]
        assert "payload.config_file: not media" in delivery["note"]


def test_error_is_recorded_with_nothing_to_copy(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    assert post(hook_client, key, (PAYLOADS / "error_422.json").read_bytes()).status_code == 200
    [delivery] = deliveries(conn)
    assert (delivery["status"], delivery["error"], delivery["resolved"]) == (
        "ERROR",
        "Invalid status code: 422",
        True,
    )
    assert ledger_rows(conn) == []


def test_app_link_and_fal_app_decide_the_kind(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    # The link names the app row: the video takes its variant; the thumbnail is not that file.
    bare = json.loads((PAYLOADS / "bare_url_strings.json").read_bytes())
    response = post(hook_client, key, bare, query="?table=gen_videos&id=42&variant=upscale")
    assert response.status_code == 200, response.json
    # An upscaler's endpoint path says upscale even when the file name does not.
    topaz = video_webhook("https://v3.fal.media/files/b/t/output.mp4", "req-topaz")
    assert post(hook_client, key, topaz, query="?fal_app=fal-ai/topaz/upscale/video").status_code == 200
    rows = ledger_rows(conn)
    assert [(r["kind"], r["source_table"], r["source_id"], r["variant"]) for r in rows] == [
        ("upscale", "gen_videos", "42", "upscale"),
        ("image", None, None, None),
        ("upscale", None, None, None),
    ]
    assert [(d["source_table"], d["source_id"], d["variant"], d["fal_app"]) for d in deliveries(conn)] == [
        ("gen_videos", "42", "upscale", None),
        (None, None, None, "fal-ai/topaz/upscale/video"),
    ]


def test_app_tables_keyed_by_uuid_or_text_ids_are_linked(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    """Supabase tables often use uuid keys; the app webhook takes text ids too."""
    uuid = "3f2b6c1e-8d4a-4f1b-9c2e-7a5d0e6b1f23"
    for n, row_id in enumerate([uuid, "V1StGXR8_Z5jdHi6B-myT", "123"]):
        hook = video_webhook(f"https://v3.fal.media/files/b/x/{n}.mp4", f"req-{n}")
        response = post(hook_client, key, hook, query=f"?table=gen_videos&id={row_id}&variant=upscale")
        assert response.status_code == 200, response.json
    expected = [("gen_videos", i, "upscale") for i in (uuid, "V1StGXR8_Z5jdHi6B-myT", "123")]
    assert [(r["source_table"], r["source_id"], r["variant"]) for r in ledger_rows(conn)] == expected
    assert [(d["source_table"], d["source_id"], d["variant"], d["note"]) for d in deliveries(conn)] == [
        (*e, None) for e in expected
    ]


@pytest.mark.parametrize(
    ("query", "message", "fal_app"),
    [
        ("?table=gen_videos&id=a.b&variant=regular", "app link ignored: id must be an integer,", None),
        ("?table=gen_videos&id=&variant=regular", "app link ignored: id must be", None),
        ("?table=gen_videos&id=1", "app link ignored: table, id and variant go together", None),
        ("?table=users&id=1&variant=regular", "app link ignored: table must be one of", None),
        ("?table=gen_videos&id=1&variant=image&fal_app=fal-ai/flux", "variant for gen_videos", "fal-ai/flux"),
        ("?fal_app=../../admin", "fal_app ignored: fal_app must be a fal model id", None),
        ("?fal_app=a/b&fal_app=c/d", "fal_app ignored: query parameter 'fal_app' is given more", None),
        ("?" + "&".join(f"p{i}=1" for i in range(60)), "query string ignored: more than 50", None),
    ],
)
def test_a_bad_hint_in_the_url_is_dropped_and_the_media_recorded(
    query: str,
    message: str,
    fal_app: str | None,
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    conn: Connection,
    redis: Redis,
) -> None:
    """The query string is not signed: a bad hint must never cost fal's signed media (a 400
    makes fal retry the same URL until it gives up)."""
    response = post(hook_client, key, BODY, query=query)
    assert response.status_code == 200, response.json
    [row] = ledger_rows(conn)
    assert (row["source_url"], row["source_table"], row["status"]) == (
        "https://v3.fal.media/files/b/x/out.mp4",
        None,
        "queued",
    )
    [delivery] = deliveries(conn)
    assert (delivery["source_table"], delivery["fal_app"], delivery["files"]) == (None, fal_app, 1)
    assert message in delivery["note"]
    assert queued(redis, "backup-regular") == [f"backup-{row['id']}"]


def test_a_linked_webhook_brings_the_app_row_up_to_date(
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
    cdn: FakeCdn,
) -> None:
    """The app stored the upscale URL with no relay running, then fal's webhook came: the
    app row must stop saying 'completed' (its upscaled file is not backed up yet)."""
    video = copied_video(conn, hook_config, redis, cdn, 1)
    upscaled = cdn.add("/files/b/t/video-1_up.mp4", 80_000, seed=77)
    execute(conn, "UPDATE gen_videos SET upscale_video_url = %s WHERE id = %s", upscaled, video)
    response = post(
        hook_client,
        key,
        video_webhook(upscaled, "req-up"),
        query=f"?table=gen_videos&id={video}&variant=upscale",
    )
    assert response.status_code == 200, response.json
    assert backup_columns(conn, video) == {"backup_status": "in_progress", "backup_storage_url": None}
    run_worker(hook_config)
    upscale = [r for r in ledger_rows(conn) if r["kind"] == "upscale"][0]
    assert backup_columns(conn, video) == {
        "backup_status": "completed",
        "backup_storage_url": upscale["destination_url"],
    }


def test_an_app_row_that_cannot_be_updated_does_not_cost_the_files(
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    conn: Connection,
    cdn: FakeCdn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    video = add_video(conn, cdn, 1, upscale_size=1000)
    execute(
        conn,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN RAISE EXCEPTION 'read-only'; END$$;"
        " CREATE TRIGGER refuse BEFORE UPDATE ON gen_videos FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    upscaled = cdn.base_url + "/files/b/t/video-1_up.mp4"
    response = post(
        hook_client,
        key,
        video_webhook(upscaled, "req-up"),
        query=f"?table=gen_videos&id={video}&variant=upscale",
    )
    assert response.status_code == 200, response.json
    assert [(r["source_url"], r["source_id"]) for r in ledger_rows(conn)] == [(upscaled, str(video))]
    assert backup_columns(conn, video)["backup_status"] is None
    assert "not brought up to date: RaiseException" in caplog.text


def test_a_bad_fal_app_on_a_payload_error_says_so_and_stays_unresolved(
    key: Ed25519PrivateKey, hook_config: Config, conn: Connection
) -> None:
    client = create_app_for(hook_config.replace(fal_key="k:s")).test_client()
    assert (
        post(
            client, key, PAYLOAD_ERROR, query="?fal_app=not-an-app&table=gen_images&id=1&variant=image"
        ).status_code
        == 200
    )
    [delivery] = deliveries(conn)
    assert not delivery["resolved"] and delivery["source_id"] == "1"
    assert delivery["note"].startswith("fal_app ignored: fal_app must be a fal model id")
    assert "add ?fal_app=<owner>/<app>" in delivery["note"]


def test_a_file_after_a_large_array_is_recorded(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    """TTS alignment data or embeddings before the file: the whole body is walked."""
    alignment = [{"char": "a", "start": i / 100, "end": i / 100 + 0.01} for i in range(25_000)]
    hook = {
        "request_id": "req-tts",
        "status": "OK",
        "payload": {
            "alignment": alignment,
            "embedding": [0.5] * 30_000,
            "audio": {"url": "https://v3.fal.media/files/b/t/speech.mp3"},
        },
    }
    response = post(hook_client, key, hook)
    assert response.status_code == 200, response.json
    assert [(r["source_url"], r["kind"]) for r in ledger_rows(conn)] == [
        ("https://v3.fal.media/files/b/t/speech.mp3", "image")
    ]
    assert deliveries(conn)[0]["note"] is None


def test_a_body_nested_too_deep_for_json_is_400_and_writes_nothing(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    raw = b'{"request_id": "r1", "status": "OK", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = post(hook_client, key, raw, headers=sign(key, raw, "r1"))
    assert response.status_code == 400 and response.json is not None
    assert "body is not valid JSON: RecursionError" in response.json["error"]
    assert counts(conn) == NOTHING


def test_deep_but_parseable_body_is_walked_to_the_bottom(
    key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    raw = (
        b'{"request_id": "r1", "status": "OK", "payload": {"x": '
        + b"[" * 900
        + b'{"url": "https://v3.fal.media/files/b/d/deep.png"}'
        + b"]" * 900
        + b"}}"
    )
    response = post(hook_client, key, raw, headers=sign(key, raw, "r1"))
    assert response.status_code == 200, response.json
    assert [r["source_url"] for r in ledger_rows(conn)] == ["https://v3.fal.media/files/b/d/deep.png"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "body is not valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"request_id": "r1", "status": "DONE", "payload": {}}', "status must be 'OK' or 'ERROR'"),
        (b'{"request_id": "r1", "status": "OK", "payload": 5}', "payload must be an object or array"),
        (b'{"request_id": "r\\u0000", "status": "OK", "payload": {}}', "cannot be stored"),
    ],
)
def test_malformed_signed_body_is_400_and_writes_nothing(
    body: bytes, message: str, key: Ed25519PrivateKey, hook_client: FlaskClient, conn: Connection
) -> None:
    request_id = "r\x00" if b"u0000" in body else "r1"
    response = post(hook_client, key, body, headers=sign(key, body, request_id))
    assert response.status_code == 400 and response.json is not None
    assert message in response.json["error"]
    assert counts(conn) == NOTHING


def test_oversized_body_is_413(key: Ed25519PrivateKey, hook_config: Config, conn: Connection) -> None:
    client = create_app_for(hook_config.replace(max_data_uri_bytes=1024)).test_client()
    raw = encode(video_webhook("https://v3.fal.media/files/b/x/out.mp4", note="x" * 1_100_000))
    response = post(client, key, raw)
    assert response.status_code == 413
    assert counts(conn) == NOTHING


# --- payload_error: the result comes from fal's queue API --------------------------------

PAYLOAD_ERROR = json.loads((PAYLOADS / "payload_error.json").read_bytes())
PE_ID = PAYLOAD_ERROR["request_id"]


def test_payload_error_without_a_key_stays_unresolved_and_is_counted(
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
) -> None:
    response = post(hook_client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/kling-video")
    assert response.status_code == 200
    [delivery] = deliveries(conn)
    assert delivery["resolved"] is False and delivery["payload_error"].startswith("Response payload")
    assert "FAL_KEY is not set" in delivery["note"]
    assert queued(redis, "falback-maintenance") == []
    status = hook_client.get("/api/status", headers=admin_headers())
    assert status.json is not None and status.json["unresolved_fal_deliveries"] == 1
    cli = falback(hook_config, "status")
    assert "unresolved fal deliveries: 1" in cli.stdout


def test_payload_error_without_fal_app_says_what_to_add(
    key: Ed25519PrivateKey, hook_config: Config, conn: Connection
) -> None:
    client = create_app_for(hook_config.replace(fal_key="k:s")).test_client()
    assert post(client, key, PAYLOAD_ERROR).status_code == 200
    [delivery] = deliveries(conn)
    assert not delivery["resolved"] and "add ?fal_app=<owner>/<app>" in delivery["note"]


@pytest.fixture
def fal_queue() -> Iterator[FalQueueServer]:
    with FalQueueServer("key-id:key-secret") as server:
        yield server


def test_payload_error_with_a_key_fetches_the_result_in_a_job(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
    cdn: FakeCdn,
    fal_queue: FalQueueServer,
) -> None:
    config = hook_config.replace(fal_key=fal_queue.key, fal_queue_base_url=fal_queue.base_url)
    video = cdn.add("/files/b/q/from-queue.mp4", 150_000, seed=7)
    fal_queue.set_result("fal-ai/kling-video", PE_ID, {"video": {"url": video, "file_name": "v.mp4"}})
    client = create_app_for(config).test_client()
    response = post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/kling-video/v2/master/text-to-video")
    assert response.status_code == 200, response.json
    assert ledger_rows(conn) == []  # nothing fetched in the request
    assert queued(redis, "falback-maintenance") == ["fal-result-1"]
    # A repeat delivery queues nothing new.
    assert post(client, key, PAYLOAD_ERROR).json["duplicate"] is True  # type: ignore[index]
    assert queued(redis, "falback-maintenance") == ["fal-result-1"]

    run_worker(config)

    [delivery] = deliveries(conn)
    assert delivery["resolved"] is True and delivery["files"] == 1
    [row] = ledger_rows(conn)
    assert (row["status"], row["kind"], row["fal_request_id"]) == ("done", "regular", PE_ID)
    assert row["md5"] == cdn.file(video).md5()
    # owner/app only, the key sent as fal documents it.
    assert fal_queue.requests == [(f"/fal-ai/kling-video/requests/{PE_ID}", "Key key-id:key-secret")]


def test_a_fetched_result_brings_the_linked_app_row_up_to_date(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
    cdn: FakeCdn,
    fal_queue: FalQueueServer,
) -> None:
    config = hook_config.replace(fal_key=fal_queue.key, fal_queue_base_url=fal_queue.base_url)
    video = copied_video(conn, config, redis, cdn, 1)
    upscaled = cdn.add("/files/b/t/video-1_up.mp4", 80_000, seed=77)
    execute(conn, "UPDATE gen_videos SET upscale_video_url = %s WHERE id = %s", upscaled, video)
    fal_queue.set_result("fal-ai/topaz", PE_ID, {"video": {"url": upscaled}})
    client = create_app_for(config).test_client()
    response = post(
        client,
        key,
        PAYLOAD_ERROR,
        query=f"?fal_app=fal-ai/topaz/upscale/video&table=gen_videos&id={video}&variant=upscale",
    )
    assert response.status_code == 200, response.json
    assert config.redis_url
    context = WorkerContext(config, Redis.from_url(config.redis_url))
    try:
        assert fetch_result(context, 1) == "resolved"
    finally:
        context.close()
    assert backup_columns(conn, video) == {"backup_status": "in_progress", "backup_storage_url": None}
    assert [(r["kind"], r["source_id"], r["status"]) for r in ledger_rows(conn)] == [
        ("regular", str(video), "done"),
        ("upscale", str(video), "queued"),
    ]


def test_fetch_job_records_why_a_result_is_unavailable(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    fal_queue: FalQueueServer,
) -> None:
    config = hook_config.replace(fal_key="wrong", fal_queue_base_url=fal_queue.base_url)
    client = create_app_for(config).test_client()
    assert post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/flux").status_code == 200
    assert config.redis_url
    wrong = WorkerContext(config, Redis.from_url(config.redis_url))
    assert fetch_result(wrong, 1) == "unresolved"
    assert "fal refused FAL_KEY (HTTP 401)" in deliveries(conn)[0]["note"]
    right = WorkerContext(config.replace(fal_key=fal_queue.key), wrong.redis)
    assert fetch_result(right, 1) == "unresolved"
    assert "fal has no such result (HTTP 404)" in deliveries(conn)[0]["note"]
    fal_queue.set_result("fal-ai/flux", PE_ID, {"images": [{"url": "https://v3.fal.media/files/a.png"}]})
    assert fetch_result(right, 1) == "resolved"
    assert fetch_result(right, 1) == "skipped"
    wrong.close()
    right.close()
    assert [r["source_url"] for r in ledger_rows(conn)] == ["https://v3.fal.media/files/a.png"]


# --- idempotency and outages -----------------------------------------------------------


def test_twenty_concurrent_deliveries_make_one_row_one_job_one_copy(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
    cdn: FakeCdn,
    tmp_path: Path,
) -> None:
    video = cdn.add("/files/b/c/concurrent.mp4", 300_000, seed=11)
    raw = encode(video_webhook(video, "req-concurrent"))
    headers = {**sign(key, raw, "req-concurrent"), "Content-Type": "application/json"}
    with gunicorn(hook_config, tmp_path / "gunicorn.log") as base_url:
        barrier = threading.Barrier(20)
        statuses: list[int] = []

        def deliver() -> None:
            barrier.wait()
            statuses.append(
                requests.post(f"{base_url}/webhooks/fal", data=raw, headers=headers, timeout=15).status_code
            )

        threads = [threading.Thread(target=deliver) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 20
    assert counts(conn) == {"ledger": 1, "deliveries": 1, "blobs": 0}
    [row] = ledger_rows(conn)
    assert queued(redis, "backup-regular") == [f"backup-{row['id']}"]
    run_worker(hook_config)
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["attempts"] == 1
    assert [p.name for p in hook_config.backup_dir.rglob("*") if p.is_file()] == [
        f"{row['id']}-concurrent.mp4"
    ]
    assert [r for r in cdn.file(video).requests] == [""]  # fetched once


def test_redis_down_still_answers_200_and_rows_wait_for_the_sweep(
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    conn: Connection,
    servers: Servers,
    redis: Redis,
) -> None:
    servers.redis.stop()
    try:
        response = post(hook_client, key, BODY)
        pending_fetch = post(hook_client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/flux")
    finally:
        servers.redis.start()
    assert response.status_code == 200 and response.json is not None
    assert response.json["queued"] is False
    assert [r["status"] for r in ledger_rows(conn)] == ["pending"]
    # Without FAL_KEY there is no fetch job to lose: still 200.
    assert pending_fetch.status_code == 200


def test_redis_down_on_a_fetchable_payload_error_is_503_then_the_retry_queues_it(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    servers: Servers,
    redis: Redis,
) -> None:
    client = create_app_for(hook_config.replace(fal_key="k:s")).test_client()
    servers.redis.stop()
    try:
        first = post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/flux")
    finally:
        servers.redis.start()
    assert first.status_code == 503
    assert len(deliveries(conn)) == 1  # recorded; fal's retry finds it
    retry = post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/flux")
    assert retry.status_code == 200 and retry.json is not None and retry.json["duplicate"] is True
    assert queued(redis, "falback-maintenance") == ["fal-result-1"]


def test_postgres_unreachable_is_503(key: Ed25519PrivateKey, hook_config: Config, conn: Connection) -> None:
    assert hook_config.database_url
    broken = hook_config.database_url.replace("/test_", "/missing_")
    client = create_app_for(hook_config.replace(database_url=broken)).test_client()
    response = post(client, key, BODY)
    assert response.status_code == 503
    closed = hook_config.replace(database_url="postgresql://u@127.0.0.1:1/x")
    assert post(create_app_for(closed).test_client(), key, BODY).status_code == 503
    assert counts(conn) == NOTHING


def test_postgres_stopped_is_503_and_fals_retry_succeeds(
    key: Ed25519PrivateKey,
    jwks_server: JwksServer,
    own_database: str,
    redis_url: str,
    servers: Servers,
    tmp_path: Path,
) -> None:
    config = Config(
        database_url=own_database, redis_url=redis_url, data_dir=tmp_path, fal_jwks_urls=(jwks_server.url,)
    )
    client = create_app_for(config).test_client()
    servers.postgres.pause()
    try:
        assert post(client, key, BODY).status_code == 503
    finally:
        servers.postgres.resume()
    retry = post(client, key, BODY)  # fal redelivers the same webhook
    assert retry.status_code == 200 and retry.json is not None and retry.json["duplicate"] is False
    conn = connect(own_database)
    try:
        assert counts(conn) == {"ledger": 1, "deliveries": 1, "blobs": 0}
    finally:
        conn.close()


# --- done when -------------------------------------------------------------------------


def test_a_signed_webhook_for_a_new_video_ends_as_a_verified_backup(
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    hook_config: Config,
    conn: Connection,
    cdn: FakeCdn,
) -> None:
    """The issue's "done when", with the link to the app row the webhook URL carries."""
    video_id = add_video(conn, cdn, 1, size=200_000)
    upscaled = cdn.add("/files/b/t/video-1_upscaled.mp4", 900_000, seed=99)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE gen_videos SET upscale_video_url = %s, upscale_file_size = 900000 WHERE id = %s",
            (upscaled, video_id),
        )
    conn.commit()
    body = video_webhook(upscaled, "req-done", file_name="upscaled.mp4", file_size=900_000)
    response = post(
        hook_client, key, body, query=f"?table=gen_videos&id={video_id}&variant=upscale&fal_app=fal-ai/topaz"
    )
    assert response.status_code == 200, response.json

    run_worker(hook_config)

    [row] = ledger_rows(conn)
    assert (row["status"], row["kind"], row["source_table"], row["source_id"]) == (
        "done",
        "upscale",
        "gen_videos",
        str(video_id),
    )
    path = Path(row["destination_url"].removeprefix("file://"))
    assert row["size_bytes"] == 900_000 == path.stat().st_size
    assert row["md5"] == cdn.file(upscaled).md5() == file_md5(path)
    with conn.cursor() as cur:
        cur.execute("SELECT backup_storage_url FROM gen_videos WHERE id = %s", (video_id,))
        assert fetch_all(cur)[0]["backup_storage_url"] == row["destination_url"]
    conn.commit()


def test_a_data_uri_is_copied_from_postgres(
    key: Ed25519PrivateKey, hook_client: FlaskClient, hook_config: Config, conn: Connection
) -> None:
    data = bytes(range(256)) * 2000  # 512,000 bytes: several chunks
    uri = "data:video/mp4;base64," + base64.b64encode(data).decode()
    body = {"request_id": "req-sync", "status": "OK", "payload": {"video": {"url": uri}}}
    assert post(hook_client, key, body).status_code == 200
    assert counts(conn)["blobs"] == 1
    run_worker(hook_config.replace(fetch_chunk_size=64 * 1024))
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["kind"] == "regular", row["last_error"]
    path = Path(row["destination_url"].removeprefix("file://"))
    assert path.read_bytes() == data and path.name.endswith(".mp4")
    assert counts(conn)["blobs"] == 0  # the stored bytes go once the copy is recorded


# --- fuzz ------------------------------------------------------------------------------

_urls = (
    st.sampled_from(
        [
            "https://v3.fal.media/files/a/b.mp4",
            "data:,x",
            "data:image/png;base64,!!",
            "http://127.0.0.1/x.png",
            "https://\ud800/x.mp4",
            "ftp://x/y",
            "https://",
        ]
    )
    | st.text(max_size=30).map(lambda t: "https://v3.fal.media/files/" + t)
    | st.binary(max_size=64).map(lambda b: "data:video/mp4;base64," + base64.b64encode(b).decode())
)
_files = st.fixed_dictionaries(
    {"url": _urls},
    optional={
        "file_name": st.text(max_size=20) | st.none(),
        "content_type": st.sampled_from(["video/mp4", "image/png", "application/octet-stream"])
        | st.text(max_size=10),
        "file_size": st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(),
    },
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | _urls | _files,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["video", "images", "upscaled_video", "audio_file", "x"]) | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)
_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)
_bodies = st.fixed_dictionaries(
    # Mostly well-formed, so that most examples reach the database.
    {
        "request_id": st.integers(0, 9).flatmap(
            lambda n: _ids if n < 8 else st.text(max_size=40) | st.integers() | st.none()
        ),
        "status": st.sampled_from(["OK", "OK", "ERROR"]) | st.just("OK") | st.text(max_size=3),
        "payload": st.dictionaries(st.sampled_from(["video", "images", "x"]), _json, max_size=3) | _json,
    },
    optional={"error": _json, "payload_error": _json, "gateway_request_id": st.text(max_size=10) | st.none()},
)
_header_names = [
    "X-Fal-Webhook-Request-Id",
    "X-Fal-Webhook-User-Id",
    "X-Fal-Webhook-Timestamp",
    "X-Fal-Webhook-Signature",
]
_header_value = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=140)
_queries = st.sampled_from(
    [
        "",
        "",
        "",
        "?table=gen_videos&id=1&variant=regular",
        "?fal_app=fal-ai/flux",
        "?table=gen_images&id=0&variant=image",
        "?id=%00",
    ]
)


@settings(
    max_examples=450,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.binary(max_size=300) | _bodies.map(encode),
    headers=st.dictionaries(st.sampled_from(_header_names), _header_value),
    resign_timestamp=st.booleans(),
    query=_queries,
)
def test_fuzz_unsigned_requests_never_5xx_never_write(
    hook_client: FlaskClient,
    conn: Connection,
    key: Ed25519PrivateKey,
    raw: bytes,
    headers: dict[str, str],
    resign_timestamp: bool,
    query: str,
) -> None:
    if resign_timestamp:
        headers["X-Fal-Webhook-Timestamp"] = str(int(time.time()))
    response = hook_client.post(f"/webhooks/fal{query}", data=raw, headers=headers)
    assert response.status_code == 401, response.json
    assert counts(conn) == NOTHING


@settings(
    max_examples=350,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies, query=_queries)
def test_fuzz_signed_bodies_never_5xx(
    hook_client: FlaskClient, key: Ed25519PrivateKey, body: dict[str, Any], query: str
) -> None:
    raw = encode(body)
    header_id = body["request_id"] if isinstance(body["request_id"], str) else "x"
    if not (header_id.isprintable() and header_id.isascii() and header_id.strip() == header_id):
        header_id = "x"  # not sendable as a header; the mismatch must then be refused
    headers = sign(key, raw, header_id)
    response = hook_client.post(f"/webhooks/fal{query}", data=raw, headers=headers)
    event(f"status {response.status_code} {(response.json or {}).get('error', '')[:40]}")
    assert response.status_code in (200, 400, 401), response.json


def test_no_secret_or_body_in_logs(
    key: Ed25519PrivateKey, hook_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app_for(hook_config.replace(fal_key="SECRET-KEY")).test_client()
    with caplog.at_level("DEBUG"):
        post(client, key, video_webhook("https://v3.fal.media/files/b/x/zzz-unique.mp4"))
        post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/flux")
    assert "req-video-1" in caplog.text
    assert "SECRET-KEY" not in caplog.text and "zzz-unique" not in caplog.text


def test_a_redelivery_replaces_a_fetch_job_that_ended(redis: Redis) -> None:
    """RQ keeps a failed job for days; fal's redelivery must still get a new fetch."""
    from rq.job import Job, JobStatus

    from jobs.fal_results import enqueue_fetch

    assert enqueue_fetch(redis, 5)
    assert not enqueue_fetch(redis, 5)  # still waiting: kept, not doubled
    Job.fetch("fal-result-5", connection=redis).set_status(JobStatus.FAILED)
    assert enqueue_fetch(redis, 5)
    assert queued(redis, "falback-maintenance") == ["fal-result-5"]


def test_the_sweep_requeues_a_result_fetch_that_redis_lost(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
    cdn: FakeCdn,
    fal_queue: FalQueueServer,
) -> None:
    """The webhook got its 200 and the fetch job was queued, then Redis lost it: the sweep
    queues it again while fal still holds the result, and not after that."""
    from jobs.sweep import sweep

    config = hook_config.replace(fal_key=fal_queue.key, fal_queue_base_url=fal_queue.base_url)
    video = cdn.add("/files/b/q/late.mp4", 50_000, seed=9)
    fal_queue.set_result("fal-ai/kling-video", PE_ID, {"video": {"url": video}})
    client = create_app_for(config).test_client()
    assert post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/kling-video").status_code == 200
    redis.flushall()
    counts = sweep(config, conn, redis)
    assert counts is not None and counts.fal_results == 1
    assert queued(redis, "falback-maintenance") == ["fal-result-1"]
    again = sweep(config, conn, redis)
    assert again is not None and again.fal_results == 0  # the job is live: not doubled
    run_worker(config)
    [row] = ledger_rows(conn)
    assert row["status"] == "done" and row["md5"] == cdn.file(video).md5()
    # Past the hour fal keeps results, an unresolved delivery is left alone.
    with conn.cursor() as cur:
        cur.execute("UPDATE fal_deliveries SET resolved = false, received_at = now() - interval '2 hours'")
    conn.commit()
    redis.flushall()
    late = sweep(config, conn, redis)
    assert late is not None and late.fal_results == 0


def test_the_sweep_does_not_refetch_a_result_that_is_unavailable(
    key: Ed25519PrivateKey,
    hook_config: Config,
    conn: Connection,
    redis: Redis,
    fal_queue: FalQueueServer,
) -> None:
    """A fetch that ended (fal has no such result) is not started again every pass."""
    from jobs.sweep import sweep

    config = hook_config.replace(fal_key=fal_queue.key, fal_queue_base_url=fal_queue.base_url)
    client = create_app_for(config).test_client()
    assert post(client, key, PAYLOAD_ERROR, query="?fal_app=fal-ai/kling-video").status_code == 200
    run_worker(config)
    assert deliveries(conn)[0]["resolved"] is False
    counts = sweep(config, conn, redis)
    assert counts is not None and counts.fal_results == 0
    assert len(fal_queue.requests) == 1


def test_an_inline_file_already_copied_is_not_stored_again(
    key: Ed25519PrivateKey,
    hook_client: FlaskClient,
    hook_config: Config,
    conn: Connection,
) -> None:
    uri = "data:image/png;base64," + base64.b64encode(b"same bytes" * 100).decode()
    first = {"request_id": "req-a", "status": "OK", "payload": {"image": {"url": uri}}}
    assert post(hook_client, key, first).status_code == 200
    run_worker(hook_config)
    assert counts(conn) == {"ledger": 1, "deliveries": 1, "blobs": 0}
    second = {"request_id": "req-b", "status": "OK", "payload": {"image": {"url": uri}}}
    assert post(hook_client, key, second).status_code == 200
    assert counts(conn) == {"ledger": 1, "deliveries": 2, "blobs": 0}


def test_a_webhook_file_starts_at_once_with_an_idle_worker(
    key: Ed25519PrivateKey, hook_client: FlaskClient, hook_config: Config, conn: Connection, cdn: FakeCdn
) -> None:
    """The webhook's own request dispatches the file (no sweep runs here, and the idle
    worker has finished no job that would top up): by the time fal gets its 200 the row is
    on its queue, and the waiting worker copies it straight away."""
    url = cdn.add("/files/b/x/prompt.mp4", 200_000, seed=5)
    with background(hook_config, "worker") as worker:
        worker.wait_for_log("Listening on")
        response = post(hook_client, key, video_webhook(url, "req-prompt"))
        assert response.status_code == 200, response.json
        [row] = ledger_rows(conn)
        assert row["status"] in ("queued", "copying", "done"), "dispatched by the intake path"
        assert row["queued_at"] is not None
        wait_for(lambda: ledger_rows(conn)[0]["status"] == "done", 10, "the copy by the idle worker")
    assert "sweep" not in worker.output


def test_a_webhook_leaves_its_file_to_the_worker_of_a_job_still_waiting(
    key: Ed25519PrivateKey, hook_config: Config, conn: Connection, redis: Redis, cdn: FakeCdn
) -> None:
    """While a queue holds a job no worker has taken, a webhook for that queue only
    commits its row, though the window has room: no worker is idle, and the one that
    takes the waiting job tops up when it finishes. That top-up is what starts the file
    here (the worker's window is one job, so its start-up top-up finds no room)."""
    client = create_app_for(hook_config.replace(queue_window_per_worker=2)).test_client()
    first = cdn.add("/files/b/w/first.mp4", 50_000, seed=1)
    second = cdn.add("/files/b/w/second.mp4", 50_000, seed=2)
    assert post(client, key, video_webhook(first, "req-first")).status_code == 200
    assert post(client, key, video_webhook(second, "req-second")).status_code == 200
    by_url = {r["source_url"]: r for r in ledger_rows(conn)}
    assert (by_url[first]["status"], by_url[second]["status"]) == ("queued", "pending")
    assert queued(redis, "backup-regular") == [f"backup-{by_url[first]['id']}"]
    assert run_worker(hook_config.replace(queue_window_per_worker=1))
    assert {r["source_url"]: r["status"] for r in ledger_rows(conn)} == {first: "done", second: "done"}

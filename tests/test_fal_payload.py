"""Classifying fal webhook bodies and finding their media references."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.fal.kinds import MediaKind
from jobs.fal.payload import (
    AppLink,
    FalWebhook,
    MalformedWebhookError,
    UrlHints,
    WebhookKind,
    load_body,
    parse_hints,
    parse_webhook,
)
from jobs.fal.walker import MediaProblem, MediaRef, decode_data_uri, find_media

FIXTURES = Path(__file__).parent / "fal_payloads"
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
)
V3 = "https://v3.fal.media/files"

VIDEO, IMAGE, AUDIO, MODEL, OTHER = (
    MediaKind.VIDEO,
    MediaKind.IMAGE,
    MediaKind.AUDIO,
    MediaKind.MODEL,
    MediaKind.OTHER,
)
OCTET = "application/octet-stream"

# fixture -> the exact references, as (path, url, kind, file_name, content_type, file_size)
EXPECTED_MEDIA: dict[str, list[tuple[str, str, MediaKind, str | None, str | None, int | None]]] = {
    "flux_images.json": [
        ("payload.images[0]", "https://url.to/image.png", IMAGE, "image.png", "image/png", 1824075)
    ],
    "kling_video.json": [
        (
            "payload.video",
            "https://v2.fal.media/files/fef1bb3a/f2xu0GkqC6jT1lzbxnZzr_output.mp4",
            VIDEO,
            "output.mp4",
            "video/mp4",
            3149129,
        )
    ],
    "video_upscaler.json": [
        (
            "payload.video",
            f"{V3}/penguin/ztj_LB4gQlW6HIfVs8zX4_upscaled.mp4",
            VIDEO,
            "upscaled.mp4",
            "video/mp4",
            187446211,
        )
    ],
    "clarity_upscaler_image.json": [
        (
            "payload.image",
            f"{V3}/rabbit/Fh5Qg9Ky1i0xHFi4b3JXp_upscaled.png",
            IMAGE,
            "upscaled.png",
            "image/png",
            6912348,
        )
    ],
    "transpixar_videos.json": [
        ("payload.videos[0]", f"{V3}/lion/9sQ2kq0V0ffZ0oNNJpD3r_rgb.mp4", VIDEO, "rgb.mp4", OCTET, 1055236),
        (
            "payload.videos[1]",
            f"{V3}/lion/Xw3aJd7_YpNQ5ncLh5oPz_alpha.mp4",
            VIDEO,
            "alpha.mp4",
            OCTET,
            412088,
        ),
    ],
    "stable_audio.json": [
        (
            "payload.audio_file",
            f"{V3}/koala/7pV3o0aF4Jqk7DTlw1G7V_tmpq8yr4lbt.wav",
            AUDIO,
            "tmpq8yr4lbt.wav",
            OCTET,
            5292044,
        )
    ],
    "trellis_3d.json": [
        (
            "payload.model_mesh",
            f"{V3}/zebra/mWm3qGz6rXG0W1k7UjB2n_model.glb",
            MODEL,
            "model.glb",
            OCTET,
            2261312,
        ),
        # No extension anywhere: the key name ("textures") decides.
        (
            "payload.textures[0]",
            f"{V3}/zebra/Q0tBq7x2GZ0X9uE8s1cKh_texture_0",
            IMAGE,
            "texture_0",
            "image/png",
            None,
        ),
    ],
    "training_lora.json": [
        (
            "payload.diffusers_lora_file",
            f"{V3}/monkey/Ptm3mB0zvN1ZQKxV5qfxi_pytorch_lora_weights.safetensors",
            OTHER,
            "pytorch_lora_weights.safetensors",
            None,
            89745224,
        ),
        (
            "payload.config_file",
            f"{V3}/monkey/HkVU2u1hC2xJ2P1y4S7lw_config.json",
            OTHER,
            "config.json",
            OCTET,
            452,
        ),
    ],
    "bare_url_strings.json": [
        ("payload.video_url", f"{V3}/tiger/tV7YiB1k0c5ZqL2HrHn9m_output.mp4", VIDEO, None, None, None),
        ("payload.thumbnail_url", f"{V3}/tiger/0cXh9Tq3b8sK1nF2vWz4p_thumbnail.jpg", IMAGE, None, None, None),
    ],
    "success_error_null.json": [
        ("payload.images[0]", f"{V3}/elephant/k3yV0pS1lq0cUoY5T8fGd.jpeg", IMAGE, None, "image/jpeg", None)
    ],
}


def load_fixture(name: str) -> FalWebhook:
    return parse_webhook(load_body((FIXTURES / name).read_bytes()))


def summary(ref: MediaRef) -> tuple[str, str, MediaKind, str | None, str | None, int | None]:
    return (ref.path, ref.url, ref.kind, ref.file_name, ref.content_type, ref.file_size)


def refs(payload: object) -> list[tuple[str, str, MediaKind]]:
    return [(r.path, r.url, r.kind) for r in find_media(payload).media]


# --- fixtures from reference/fal.md --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_MEDIA))
def test_fixture_media(name: str) -> None:
    hook = load_fixture(name)
    assert hook.kind is WebhookKind.MEDIA
    assert [summary(r) for r in hook.media] == EXPECTED_MEDIA[name]
    assert hook.problems == () and not hook.truncated
    assert hook.error is None
    assert all(r.data is None for r in hook.media)


def test_every_fixture_is_covered() -> None:
    covered = set(EXPECTED_MEDIA) | {
        "sync_mode_data_uri.json",
        "error_422.json",
        "payload_error.json",
    }
    assert {p.name for p in FIXTURES.glob("*.json")} == covered


def test_flux_ids() -> None:
    hook = load_fixture("flux_images.json")
    assert hook.request_id == "123e4567-e89b-12d3-a456-426614174000"
    assert hook.gateway_request_id == hook.request_id


def test_sync_mode_data_uri() -> None:
    hook = load_fixture("sync_mode_data_uri.json")
    assert hook.kind is WebhookKind.MEDIA
    [ref] = hook.media
    assert ref.path == "payload.images[0]"
    assert ref.url.startswith("data:image/png;base64,iVBOR")
    assert (ref.kind, ref.content_type, ref.file_name, ref.file_size) == (
        IMAGE,
        "image/png",
        None,
        None,
    )
    assert ref.is_data_uri and ref.data == PNG_1X1
    assert ref.display_url == f"data:image/png;base64,... ({len(ref.url)} chars)"
    assert "iVBOR" not in repr(ref)


def test_error_body() -> None:
    hook = load_fixture("error_422.json")
    assert hook.kind is WebhookKind.ERROR
    assert hook.error == "Invalid status code: 422"
    assert hook.error_payload == {
        "detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]
    }
    assert hook.media == ()


def test_payload_null_with_payload_error() -> None:
    hook = load_fixture("payload_error.json")
    assert hook.kind is WebhookKind.PAYLOAD_ERROR
    assert hook.request_id == "a1b2c3d4-0000-4000-8000-00000000000b"
    assert hook.error is not None and hook.error.startswith("Response payload is not JSON")
    assert hook.media == ()


# --- classification and malformed bodies ------------------------------------------------


def body(**fields: object) -> dict[str, object]:
    return {"request_id": "r1", "status": "OK", "payload": {}, **fields}


def test_ok_without_media() -> None:
    hook = parse_webhook(body(payload={"text": "hello", "seed": 3}))
    assert (hook.kind, hook.media, hook.problems) == (WebhookKind.MEDIA, (), ())


def test_ok_with_payload_absent_is_fetched_later() -> None:
    raw = body()
    del raw["payload"]
    hook = parse_webhook(raw)
    assert (hook.kind, hook.error) == (WebhookKind.PAYLOAD_ERROR, "payload is null")


def test_error_without_message() -> None:
    hook = parse_webhook(body(status="ERROR", error=None, payload=None))
    assert (hook.kind, hook.error) == (WebhookKind.ERROR, "fal reported an error without a message")


def test_error_body_media_is_not_collected() -> None:
    hook = parse_webhook(body(status="ERROR", error="boom", payload={"image": {"url": V3 + "/a.png"}}))
    assert hook.media == ()


def test_array_payload_is_walked() -> None:
    hook = parse_webhook(body(payload=[{"url": V3 + "/a.png"}]))
    assert [r.path for r in hook.media] == ["payload[0]"]


def test_odd_gateway_request_id_is_ignored() -> None:
    assert parse_webhook(body(gateway_request_id=5)).gateway_request_id is None
    assert parse_webhook(body(gateway_request_id=None)).gateway_request_id is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "body must be a JSON object"),
        ("OK", "body must be a JSON object"),
        ({"status": "OK", "payload": {}}, "request_id is missing"),
        (body(request_id=""), "request_id is missing"),
        (body(request_id="   "), "request_id is missing"),
        (body(request_id=123), "request_id is missing"),
        (body(request_id="x" * 256), "request_id is longer than 255"),
        (body(status=None), "status must be 'OK' or 'ERROR', got None"),
        (body(status="COMPLETED"), "status must be 'OK' or 'ERROR', got 'COMPLETED'"),
        (body(payload="https://v3.fal.media/a.png"), "payload must be an object or array"),
        (body(payload=3), "payload must be an object or array when status is OK, got int"),
        (body(payload=True), "got bool"),
    ],
)
def test_malformed(raw: object, message: str) -> None:
    with pytest.raises(MalformedWebhookError, match=message.replace("(", r"\(")):
        parse_webhook(raw)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b'{"a": NaN'], ids=str
)
def test_load_body_rejects_bad_json(raw: bytes) -> None:
    with pytest.raises(MalformedWebhookError, match="body is not valid JSON"):
        load_body(raw)


# --- the walker ------------------------------------------------------------------------


def test_nested_objects_at_any_depth() -> None:
    payload = {"result": {"outputs": [{"stage": {"file": {"url": V3 + "/deep/x.mp4"}}}]}}
    assert refs(payload) == [("payload.result.outputs[0].stage.file", V3 + "/deep/x.mp4", VIDEO)]


def test_document_order_and_mixed_shapes() -> None:
    payload = {
        "images": [{"url": V3 + "/1.png"}, {"url": V3 + "/2.png"}],
        "video": {"url": V3 + "/v.mp4", "thumbnail_url": V3 + "/v.jpg"},
        "urls": [V3 + "/list.webp"],
        "audio": {"url": V3 + "/a.mp3"},
    }
    assert refs(payload) == [
        ("payload.images[0]", V3 + "/1.png", IMAGE),
        ("payload.images[1]", V3 + "/2.png", IMAGE),
        ("payload.video", V3 + "/v.mp4", VIDEO),
        ("payload.video.thumbnail_url", V3 + "/v.jpg", IMAGE),
        ("payload.urls[0]", V3 + "/list.webp", IMAGE),
        ("payload.audio", V3 + "/a.mp3", AUDIO),
    ]


def test_same_url_twice_is_one_reference_with_merged_hints() -> None:
    url = V3 + "/same.mp4"
    payload = {"video_url": url, "video": {"url": url, "file_name": "same.mp4", "file_size": 9}}
    scan = find_media(payload)
    assert [summary(r) for r in scan.media] == [("payload.video_url", url, VIDEO, "same.mp4", None, 9)]


def test_non_media_strings_are_ignored() -> None:
    payload = {
        "prompt": "a cat, see https://example.com",
        "seed": 1,
        "nsfw": [False],
        "note": "http",
        "url_like": "ftp://x/y.png",
        "timings": {"inference": 1.5},
    }
    assert find_media(payload).media == ()


def test_prose_that_starts_like_a_url_is_not_a_reference() -> None:
    payload = {
        "caption": "https://v3.fal.media/a.png is the result",
        "log": "data: 5 rows",
        "note": "data:text",
    }
    scan = find_media(payload)
    assert (scan.media, scan.problems) == ((), ())


def test_url_field_that_is_not_a_string() -> None:
    payload = {"image": {"url": None, "preview": {"url": V3 + "/p.png"}}, "x": {"url": 5}}
    assert refs(payload) == [("payload.image.preview", V3 + "/p.png", IMAGE)]


def test_bad_urls_become_problems() -> None:
    payload = {
        "a": {"url": "s3://bucket/key.mp4"},
        "b": {"url": "https:///no-host.png"},
        "c": {"url": "https://v3.fal.media/has space.png"},
        "d": "https://[::1",
        "e": {"url": "https://v3.fal.media/" + "x" * 9000},
    }
    scan = find_media(payload)
    assert scan.media == ()
    assert [(p.path, p.message) for p in scan.problems] == [
        ("payload.a", "unsupported URL (expected http, https or data:)"),
        ("payload.b", "URL has no host"),
        ("payload.c", "URL contains whitespace or control characters"),
        ("payload.d", "URL cannot be parsed"),
        ("payload.e", "URL longer than 8192 characters"),
    ]
    assert len(scan.problems[-1].url) == 200


def test_odd_keys_in_paths() -> None:
    payload = {"my key": {"url": V3 + "/a.png"}, "k" * 100: [V3 + "/b.png"]}
    assert [r.path for r in find_media(payload).media] == [
        'payload["my key"]',
        'payload["' + "k" * 61 + '..."][0]',  # cut, and quoted since "..." is no identifier
    ]


def test_upper_case_scheme() -> None:
    assert refs({"image": "HTTPS://V3.FAL.MEDIA/A.PNG"}) == [
        ("payload.image", "HTTPS://V3.FAL.MEDIA/A.PNG", IMAGE)
    ]


# --- kind inference --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        # key name decides when there is no known extension
        ({"video": {"url": V3 + "/abc", "content_type": OCTET}}, VIDEO),
        ({"audio": {"url": V3 + "/abc"}}, AUDIO),
        ({"model_glb": {"url": V3 + "/abc"}}, MODEL),
        ({"model_urls": {"glb": {"url": V3 + "/abc"}}}, MODEL),
        ({"videoThumbnail": V3 + "/abc"}, IMAGE),  # head noun last: a thumbnail
        ({"masks": [{"url": V3 + "/abc"}]}, IMAGE),
        # extension beats a misleading or generic key, file_name beats the URL
        ({"video": {"url": V3 + "/poster.gif"}}, IMAGE),
        ({"output": {"url": V3 + "/abc", "file_name": "clip.MOV"}}, VIDEO),
        ({"output": {"url": V3 + "/x.png", "file_name": "x.bin"}}, IMAGE),
        ({"file": {"url": V3 + "/speech.flac"}}, AUDIO),
        ({"file": {"url": V3 + "/mesh.obj?sig=1#frag"}}, MODEL),
        # content_type is the last resort, and octet-stream says nothing
        ({"file": {"url": V3 + "/abc", "content_type": "video/webm"}}, VIDEO),
        ({"file": {"url": V3 + "/abc", "content_type": "model/gltf-binary"}}, MODEL),
        ({"file": {"url": V3 + "/abc", "content_type": OCTET}}, OTHER),
        ({"result": V3 + "/abc"}, OTHER),
    ],
)
def test_kind_inference(payload: object, kind: MediaKind) -> None:
    [ref] = find_media(payload).media
    assert ref.kind is kind


# --- data: URIs ------------------------------------------------------------------------


def test_data_uri_variants() -> None:
    b64 = base64.b64encode(PNG_1X1).decode()
    payload = {
        "a": {"url": "data:image/png;base64," + b64},
        "b": "data:;base64," + base64.urlsafe_b64encode(b"\xfb\xff hi").decode().rstrip("="),
        "c": "data:text/plain,hello%20world",
        "d": {"url": "data:audio/wav;base64," + b64[:8] + "%0A" + b64[8:], "file_name": "x.wav"},
    }
    scan = find_media(payload)
    assert [(r.path, r.kind, r.content_type, r.data) for r in scan.media] == [
        ("payload.a", IMAGE, "image/png", PNG_1X1),
        ("payload.b", OTHER, None, b"\xfb\xff hi"),
        ("payload.c", OTHER, "text/plain", b"hello world"),
        ("payload.d", AUDIO, "audio/wav", PNG_1X1),
    ]


def test_data_uri_over_cap_is_a_problem_not_an_exception() -> None:
    uri = "data:video/mp4;base64," + base64.b64encode(b"\0" * 3000).decode()
    payload = {"video": {"url": uri}, "again": uri, "small": "data:image/png;base64,AAAA"}
    scan = find_media(payload, max_data_bytes=2048)
    assert scan.problems == (
        MediaProblem(
            "payload.video",
            f"data:video/mp4;base64,... ({len(uri)} chars)",
            "data: URI holds 3000 bytes, over the 2048 bytes cap",
        ),
    )
    assert [r.path for r in scan.media] == ["payload.small"]


def test_huge_data_uri_message() -> None:
    uri = "data:video/mp4;base64," + "A" * (16 * 1024 * 1024)
    assert decode_data_uri(uri, 10 * 1024 * 1024) == ("data: URI holds 12.0 MiB, over the 10.0 MiB cap")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("data:image/png;base64,@@@@", "data: URI is not valid base64"),
        ("data:image/png;base64,AAAAA", "data: URI is not valid base64"),
        ("data:image/png;base64", "data: URI has no ',' separator"),
    ],
)
def test_bad_data_uris(uri: str, message: str) -> None:
    assert decode_data_uri(uri, 1024) == message
    [problem] = find_media({"image": {"url": uri}}).problems
    assert problem.message == message


# --- bounds and robustness -------------------------------------------------------------


def test_deep_nesting_is_cut_not_recursed() -> None:
    deep: object = {"url": V3 + "/bottom.png"}
    for _ in range(200_000):
        deep = [deep]
    start = time.perf_counter()
    scan = find_media({"top": V3 + "/top.png", "deep": deep}, max_depth=64)
    assert time.perf_counter() - start < 1
    assert scan.truncated
    assert [r.url for r in scan.media] == [V3 + "/top.png"]
    assert scan.nodes_visited <= 70


def test_the_deepest_body_json_can_parse_is_walked_whole() -> None:
    """json.loads gives up near Python's recursion limit (a 400); anything it parses fits
    under the default depth bound, and the iterative walk needs no stack for it."""
    depth = 900
    raw = "[" * depth + json.dumps({"url": V3 + "/deep.png"}) + "]" * depth
    scan = find_media(load_body(raw.encode()))
    assert not scan.truncated and [r.url for r in scan.media] == [V3 + "/deep.png"]
    assert scan.media[0].path == "payload" + "[0]" * depth


def test_media_after_a_large_sibling_array_is_found() -> None:
    """TTS alignments and embeddings come before the file in some results: every value
    is walked, however many come first."""
    alignment = [{"char": "a", "start": i / 10, "end": i / 10 + 0.1} for i in range(30_000)]
    payload = {
        "alignment": alignment,
        "audio": {"url": V3 + "/speech.mp3"},
        "words": [[i, str(i)] for i in range(30_000)],
        "video_url": V3 + "/last.mp4",
    }
    scan = find_media(payload)
    assert [(r.path, r.kind) for r in scan.media] == [("payload.audio", AUDIO), ("payload.video_url", VIDEO)]
    assert not scan.truncated and scan.nodes_visited > 150_000


def test_a_mib_of_numbers_walks_in_well_under_a_second() -> None:
    raw = json.dumps(
        {"embedding": [i * 0.001 for i in range(120_000)], "images": [{"url": V3 + "/last.png"}]}
    ).encode()
    assert len(raw) > 1024 * 1024
    hook_body = load_body(b'{"request_id": "r1", "status": "OK", "payload": ' + raw + b"}")
    start = time.perf_counter()
    hook = parse_webhook(hook_body)
    assert time.perf_counter() - start < 0.5
    assert [r.url for r in hook.media] == [V3 + "/last.png"] and not hook.truncated


def test_a_body_of_urls_keeps_the_first_thousand_and_counts_the_rest_fast() -> None:
    wide = {"images": [{"url": f"{V3}/{i}.png", "n": i} for i in range(50_000)]}
    start = time.perf_counter()
    scan = find_media(wide)
    assert time.perf_counter() - start < 2
    assert (len(scan.media), scan.unexamined, scan.truncated) == (1000, 49_000, False)
    assert scan.media[-1].path == "payload.images[999]"


def test_bad_urls_do_not_crowd_out_the_media_after_them() -> None:
    bad = [{"url": f"s3://bucket/{i}.mp4"} for i in range(500)]
    scan = find_media({"bad": bad, "video": {"url": V3 + "/v.mp4"}})
    assert [r.url for r in scan.media] == [V3 + "/v.mp4"]
    assert (len(scan.problems), scan.more_problems) == (50, 450)


def test_webhook_reports_truncation() -> None:
    payload = {"a": [[[{"url": V3 + "/deep.png"}]]], "b": {"url": V3 + "/b.png"}}
    hook = parse_webhook(body(payload=payload), max_depth=3)
    assert hook.truncated and [r.url for r in hook.media] == [V3 + "/b.png"]


def test_depth_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        find_media({}, max_depth=0)


URLISH = st.sampled_from(
    [
        V3 + "/a.png",
        V3 + "/b.mp4",
        "https://v2.fal.media/files/c",
        "http://x",
        "https://",
        "https://[",
        "data:image/png;base64,AAAA",
        "data:,x",
        "data:;base64,!!",
        "data:",
        "ftp://x",
        "",
    ]
)
KEYS = st.one_of(
    st.sampled_from(["url", "video", "images", "file_name", "content_type", "file_size", "audio"]),
    st.text(max_size=8),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | URLISH,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=40,
)


def _recursive_urls(value: object, max_depth: int, depth: int = 0) -> list[str]:
    """A plain recursive reference: every url-ish string within the depth bound."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, dict | list) or depth >= max_depth:
        return []
    items = value.values() if isinstance(value, dict) else value
    return [u for item in items for u in _recursive_urls(item, max_depth, depth + 1)]


@settings(
    max_examples=1000,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(payload=JSON, max_depth=st.integers(1, 8))
def test_walker_never_raises_and_finds_the_same_as_a_recursive_walk(payload: object, max_depth: int) -> None:
    scan = find_media(payload, max_depth=max_depth, max_data_bytes=64)
    assert len(scan.media) + len(scan.problems) <= scan.nodes_visited
    strings = _recursive_urls(payload, max_depth)
    assert {r.url for r in scan.media} <= set(strings)
    assert len(scan.media) + len(scan.problems) <= len(set(strings))
    urls = [r.url for r in scan.media]
    assert len(urls) == len(set(urls))
    for ref in scan.media:
        assert ref.path.startswith("payload")
        assert ref.kind in MediaKind
        assert ref.url.lower().startswith(("http://", "https://", "data:"))
        assert (ref.data is not None) == ref.url.lower().startswith("data:")


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    raw=st.fixed_dictionaries(
        {},
        optional={
            "request_id": st.one_of(st.text(max_size=5), st.integers(), st.none()),
            "status": st.sampled_from(["OK", "ERROR", "ok", None, 1]),
            "payload": JSON,
            "error": st.one_of(st.none(), st.text(max_size=5)),
            "payload_error": st.one_of(st.none(), st.text(max_size=5)),
        },
    )
)
def test_parse_webhook_only_raises_malformed(raw: dict[str, object]) -> None:
    try:
        hook = parse_webhook(raw)
    except MalformedWebhookError as exc:
        assert str(exc)
    else:
        assert hook.kind in WebhookKind and hook.request_id


# --- hints on the webhook URL -----------------------------------------------------------


UUID = "3f2b6c1e-8d4a-4f1b-9c2e-7a5d0e6b1f23"


@pytest.mark.parametrize(
    ("query", "link"),
    [
        ("table=gen_videos&id=123&variant=upscale", AppLink("gen_videos", "123", "upscale")),
        ("table=gen_videos&id=7&variant=regular", AppLink("gen_videos", "7", "regular")),
        (b"variant=image&id=42&table=gen_images", AppLink("gen_images", "42", "image")),
        ("table=gen_images&id=42&variant=image&utm=x", AppLink("gen_images", "42", "image")),
        # The app tables' keys are not always integers (Supabase often uses uuids).
        (f"table=gen_images&id={UUID}&variant=image", AppLink("gen_images", UUID, "image")),
        (f"table=gen_images&id={UUID.upper()}&variant=image", AppLink("gen_images", UUID.upper(), "image")),
        (
            "table=gen_videos&id=V1StGXR8_Z5jdHi6B-myT&variant=regular",
            AppLink("gen_videos", "V1StGXR8_Z5jdHi6B-myT", "regular"),
        ),
        ("table=gen_videos&id=" + "9" * 19 + "&variant=regular", AppLink("gen_videos", "9" * 19, "regular")),
        ("", None),
        ("fal_webhook=1&other=2", None),
    ],
)
def test_app_link(query: str | bytes, link: AppLink | None) -> None:
    assert parse_hints(query) == UrlHints(link)


def test_app_link_media_kind() -> None:
    assert AppLink("gen_videos", "1", "upscale").media_kind is VIDEO
    assert AppLink("gen_images", "1", "image").media_kind is IMAGE


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("table=gen_videos&id=1", "app link ignored: table, id and variant go together; missing variant"),
        ("id=1", "missing table, variant"),
        ("table=users&id=1&variant=regular", "table must be one of gen_images, gen_videos"),
        ("table=gen_videos&id=1&variant=image", "variant for gen_videos must be one of regular, upscale"),
        ("table=gen_images&id=1&variant=upscale", "variant for gen_images must be one of image"),
        ("table=gen_videos&id=1&variant=", "variant for gen_videos must be one of"),
        ("table=gen_videos&id=&variant=regular", "id must be an integer, a uuid or a short text id"),
        ("table=gen_videos&id=1.5&variant=regular", "id must be"),
        ("table=gen_videos&id=a%20b&variant=regular", "id must be"),
        ("table=gen_videos&id=%D9%A1&variant=regular", "id must be"),
        ("table=gen_videos&id=" + "a" * 65 + "&variant=regular", "id must be"),
        ("table=gen_videos&id=1&id=2&variant=regular", "'id' is given more than once"),
    ],
)
def test_a_bad_app_link_is_dropped_with_the_reason(query: str, message: str) -> None:
    hints = parse_hints(query + "&fal_app=fal-ai/flux")
    assert (hints.link, hints.fal_app) == (None, "fal-ai/flux")  # the other hint stands
    [reason] = hints.ignored
    assert reason.startswith("app link ignored: ") and message in reason


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("fal_app=../../admin", "fal_app ignored: fal_app must be a fal model id"),
        ("fal_app=a/b&fal_app=c/d", "fal_app ignored: query parameter 'fal_app' is given more than once"),
        ("fal_app=fal-ai", "must be a fal model id"),
    ],
)
def test_a_bad_fal_app_is_dropped_with_the_reason(query: str, message: str) -> None:
    hints = parse_hints(query + "&table=gen_images&id=5&variant=image")
    assert (hints.link, hints.fal_app) == (AppLink("gen_images", "5", "image"), None)
    [reason] = hints.ignored
    assert reason.startswith("fal_app ignored: ") and message in reason


def test_too_many_parameters_drop_every_hint() -> None:
    query = "table=gen_images&id=5&variant=image&" + "&".join(f"p{i}=1" for i in range(60))
    assert parse_hints(query) == UrlHints(ignored=("query string ignored: more than 50 parameters",))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(query=st.text(max_size=80) | st.binary(max_size=80))
def test_parse_hints_never_raises(query: str | bytes) -> None:
    hints = parse_hints(query)
    assert hints.link is None or hints.link.source_id

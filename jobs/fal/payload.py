"""Classify a fal webhook body and find every media file it references.

``payload`` is each model's own output schema, so instead of knowing the schemas the walker
visits the whole tree: any object with a ``url`` string (fal's File/Image) and any bare
http(s)/``data:`` string is a media reference. The walk is iterative and bounded (depth and
node count) so a hostile body cannot make it slow or blow the stack.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from itertools import islice
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlsplit

from core.kinds import APP_TABLES, columns_of

logger = logging.getLogger(__name__)

DEFAULT_MAX_DATA_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_NODES = 20_000
MAX_URL_LENGTH = 8192  # longer http(s) strings are reported, not queued
MAX_REQUEST_ID_LENGTH = 255
_MAX_PATH_KEY = 64  # hostile keys are cut in paths, which are informational only
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Whole-string http(s) URL without whitespace, or an RFC 2397 data: URI header.
_BARE_URL_RE = re.compile(r"(?i)(?:https?://\S*\Z|data:(?:[\w.+-]+/[\w.+-]+)?(?:;[^,;\s]*)*,)")
_TOKEN_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+[a-z]*")


class MediaKind(StrEnum):
    VIDEO = "video"
    IMAGE = "image"
    AUDIO = "audio"
    MODEL = "model"  # 3D meshes (.glb etc.), not ML weights
    OTHER = "other"


class WebhookKind(StrEnum):
    MEDIA = "media"  # status OK with a payload: copy ``media`` (may be empty)
    PAYLOAD_ERROR = "payload_error"  # status OK, payload null: fetch the result from the queue API
    ERROR = "error"  # the request failed at fal: record ``error``, nothing to copy


class MalformedWebhookError(ValueError):
    """The body is not a fal webhook we can act on; ``str(exc)`` is fit for a 400 answer."""


class InvalidLinkError(ValueError):
    """The webhook URL's ``table``/``id``/``variant`` parameters are wrong; fit for a 400."""


@dataclass(frozen=True, repr=False)
class MediaRef:
    """One file to back up. Hints (name, type, size) come from the payload and may be wrong."""

    url: str
    path: str
    kind: MediaKind
    file_name: str | None = None
    content_type: str | None = None
    file_size: int | None = None
    data: bytes | None = None  # decoded bytes of a ``data:`` URI (sync mode); None otherwise

    @property
    def is_data_uri(self) -> bool:
        return self.data is not None

    @property
    def display_url(self) -> str:
        """The URL shortened for logs and errors (a data: URI can be megabytes)."""
        return _display_url(self.url)

    def __repr__(self) -> str:
        return f"MediaRef({self.path}, {self.kind.value}, {self.display_url!r})"


@dataclass(frozen=True)
class MediaProblem:
    """A reference that was found but cannot be queued (too big, undecodable, bad URL)."""

    path: str
    url: str  # display form, already shortened
    message: str


@dataclass(frozen=True)
class MediaScan:
    media: tuple[MediaRef, ...]
    problems: tuple[MediaProblem, ...]
    nodes_visited: int
    truncated: bool  # a depth or node bound cut the walk short


@dataclass(frozen=True)
class FalWebhook:
    kind: WebhookKind
    request_id: str
    gateway_request_id: str | None
    error: str | None = None  # ERROR message, or the payload_error text
    error_payload: object = None  # ERROR details from fal (e.g. validation ``detail``)
    media: tuple[MediaRef, ...] = ()
    problems: tuple[MediaProblem, ...] = ()
    truncated: bool = False


@dataclass(frozen=True)
class AppLink:
    """Which app row a webhook belongs to, from the query string the app put on the URL."""

    source_table: str
    source_id: int
    variant: str

    @property
    def media_kind(self) -> MediaKind:
        return MediaKind.IMAGE if self.source_table == "gen_images" else MediaKind.VIDEO


VALID_LINKS: dict[str, frozenset[str]] = {
    table: frozenset(c.kind for c in columns_of(table)) for table in APP_TABLES
}

# --- body -----------------------------------------------------------------------------


def load_body(raw: bytes) -> object:
    """Parse raw webhook bytes as JSON; any failure is a ``MalformedWebhookError``."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedWebhookError(f"body is not valid JSON: {type(exc).__name__}") from None


def parse_webhook(
    body: object,
    *,
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> FalWebhook:
    """Classify a parsed fal webhook body; raises ``MalformedWebhookError`` for a 400."""
    if not isinstance(body, dict):
        raise MalformedWebhookError("body must be a JSON object")
    request_id = _request_id(body)
    gateway = body.get("gateway_request_id")
    gateway_request_id = gateway if isinstance(gateway, str) and gateway else None
    status = body.get("status")
    payload = body.get("payload")
    if status == "ERROR":
        return FalWebhook(WebhookKind.ERROR, request_id, gateway_request_id, _error_text(body), payload)
    if status != "OK":
        raise MalformedWebhookError(f"status must be 'OK' or 'ERROR', got {_short(status)}")
    if payload is None:
        # fal could not serialise the result; it still exists (and was billed): fetch it later.
        reason = body.get("payload_error")
        text = reason if isinstance(reason, str) and reason else "payload is null"
        return FalWebhook(WebhookKind.PAYLOAD_ERROR, request_id, gateway_request_id, text)
    if not isinstance(payload, dict | list):
        raise MalformedWebhookError(
            f"payload must be an object or array when status is OK, got {type(payload).__name__}"
        )
    scan = find_media(payload, max_data_bytes=max_data_bytes, max_depth=max_depth, max_nodes=max_nodes)
    return FalWebhook(
        WebhookKind.MEDIA,
        request_id,
        gateway_request_id,
        media=scan.media,
        problems=scan.problems,
        truncated=scan.truncated,
    )


def _request_id(body: dict[str, object]) -> str:
    value = body.get("request_id")
    if not isinstance(value, str) or not value.strip():
        raise MalformedWebhookError("request_id is missing or not a non-empty string")
    if len(value) > MAX_REQUEST_ID_LENGTH:
        raise MalformedWebhookError(f"request_id is longer than {MAX_REQUEST_ID_LENGTH} chars")
    return value


def _error_text(body: dict[str, object]) -> str:
    error = body.get("error")
    if isinstance(error, str) and error:
        return error
    return "fal reported an error without a message"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- walker ---------------------------------------------------------------------------


@dataclass
class _Walk:
    max_data_bytes: int
    media: list[MediaRef] = field(default_factory=list)
    problems: list[MediaProblem] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # url -> position in media
    seen_problems: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Node:
    value: object
    path: str
    keys: tuple[str, ...]  # the nearest two key names, innermost last (for kind hints)
    depth: int


def find_media(
    payload: object,
    *,
    root: str = "payload",
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_nodes: int = DEFAULT_MAX_NODES,
) -> MediaScan:
    """Collect every media reference under ``payload``, in document order, de-duplicated.

    Never raises on JSON-shaped input. At most ``max_nodes`` values are visited (and queued),
    and containers deeper than ``max_depth`` are skipped; either sets ``truncated``.
    """
    if max_nodes < 1 or max_depth < 1:
        raise ValueError("max_nodes and max_depth must be at least 1")
    walk = _Walk(max_data_bytes)
    stack = [_Node(payload, root, (), 0)]
    scheduled = 1
    visited = 0
    truncated = False
    while stack:
        node = stack.pop()
        visited += 1
        if isinstance(node.value, dict | list) and node.depth >= max_depth:
            truncated = True
            continue
        _visit(walk, node)
        pending = _children(node)
        children = list(islice(pending, max_nodes - scheduled))
        scheduled += len(children)
        if scheduled >= max_nodes and next(pending, None) is not None:
            truncated = True
        stack.extend(reversed(children))  # reversed so pops follow document order
    if truncated:
        logger.warning("fal payload walk truncated after %d nodes", visited)
    return MediaScan(tuple(walk.media), tuple(walk.problems), visited, truncated)


def _children(node: _Node) -> Iterator[_Node]:
    value, depth = node.value, node.depth + 1
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield _Node(item, f"{node.path}[{i}]", node.keys, depth)
    elif isinstance(value, dict):
        is_file = isinstance(value.get("url"), str)
        for key, item in value.items():
            if is_file and key == "url":
                continue  # already taken as the File object's own URL
            name = str(key)
            yield _Node(item, _join_path(node.path, name), (*node.keys[-1:], name), depth)


def _join_path(path: str, key: str) -> str:
    if len(key) > _MAX_PATH_KEY:
        key = key[: _MAX_PATH_KEY - 3] + "..."
    if _IDENTIFIER_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _visit(walk: _Walk, node: _Node) -> None:
    value = node.value
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str):
            _add(walk, node, url, _hints(value), require_url=True)
    elif isinstance(value, str) and _looks_like_url(value):
        _add(walk, node, value, _Hints(), require_url=False)


@dataclass(frozen=True)
class _Hints:
    file_name: str | None = None
    content_type: str | None = None
    file_size: int | None = None


def _hints(obj: dict[str, object]) -> _Hints:
    name, ctype, size = obj.get("file_name"), obj.get("content_type"), obj.get("file_size")
    return _Hints(
        name if isinstance(name, str) and name else None,
        ctype if isinstance(ctype, str) and ctype else None,
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
    )


def _looks_like_url(text: str) -> bool:
    """A bare string counts only if it is wholly a URL, so prose ("data: 5 rows") is skipped."""
    return _BARE_URL_RE.match(text) is not None


def _add(walk: _Walk, node: _Node, url: str, hints: _Hints, *, require_url: bool) -> None:
    if url in walk.index:
        _merge_hints(walk, url, hints)
        return
    if url in walk.seen_problems:
        return
    lowered = url[:8].lower()
    if lowered.startswith("data:"):
        ref_or_error: MediaRef | str = _data_ref(url, node, hints, walk.max_data_bytes)
    elif lowered.startswith(("http://", "https://")):
        ref_or_error = _http_ref(url, node, hints)
    elif require_url:
        ref_or_error = "unsupported URL (expected http, https or data:)"
    else:
        return
    if isinstance(ref_or_error, str):
        walk.seen_problems.add(url)
        walk.problems.append(MediaProblem(node.path, _display_url(url), ref_or_error))
        return
    walk.index[url] = len(walk.media)
    walk.media.append(ref_or_error)


def _merge_hints(walk: _Walk, url: str, hints: _Hints) -> None:
    """A duplicate may carry hints the first sighting lacked (bare string, then File)."""
    i = walk.index[url]
    ref = walk.media[i]
    walk.media[i] = replace(
        ref,
        file_name=ref.file_name or hints.file_name,
        content_type=ref.content_type or hints.content_type,
        file_size=ref.file_size if ref.file_size is not None else hints.file_size,
    )


def _http_ref(url: str, node: _Node, hints: _Hints) -> MediaRef | str:
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 32 for c in url):
        return "URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "URL cannot be parsed"
    if not host:
        return "URL has no host"
    kind = _infer_kind(node.keys, _known_extension(hints.file_name, parts.path), hints.content_type)
    return MediaRef(url, node.path, kind, hints.file_name, hints.content_type, hints.file_size)


def _data_ref(url: str, node: _Node, hints: _Hints, cap: int) -> MediaRef | str:
    decoded = decode_data_uri(url, cap)
    if isinstance(decoded, str):
        return decoded
    mediatype, data = decoded
    ctype = hints.content_type or mediatype or None  # the URI's own type fills a missing hint
    kind = _infer_kind(node.keys, _known_extension(hints.file_name), ctype)
    return MediaRef(url, node.path, kind, hints.file_name, ctype, hints.file_size, data)


def decode_data_uri(uri: str, max_bytes: int) -> tuple[str, bytes] | str:
    """Decode an RFC 2397 ``data:`` URI into (mediatype, bytes), or return an error message.

    The size is checked before decoding, so an oversized URI costs no extra memory.
    """
    comma = uri.find(",")
    if uri[:5].lower() != "data:" or comma < 0:
        return "data: URI has no ',' separator"
    params = uri[5:comma].split(";")
    is_base64 = params[-1].strip().lower() == "base64"
    mediatype = params[0].strip().lower()
    if is_base64:
        text = re.sub(r"\s+", "", unquote(uri[comma + 1 :]))
        size = len(text) * 3 // 4 - (len(text) - len(text.rstrip("=")))
    else:
        text = uri[comma + 1 :]
        size = len(text)  # upper bound: percent-decoding only shrinks
    if size > max_bytes:
        return f"data: URI holds {_size(size)}, over the {_size(max_bytes)} cap"
    try:
        if is_base64:
            urlsafe = text.translate(str.maketrans("-_", "+/"))
            data = base64.b64decode(urlsafe + "=" * (-len(urlsafe) % 4), validate=True)
        else:
            data = unquote_to_bytes(text)
    except (binascii.Error, ValueError):
        return "data: URI is not valid base64"
    return mediatype, data


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 * 1024 else f"{n / (1024 * 1024):.1f} MiB"


def _display_url(url: str) -> str:
    if url[:5].lower() == "data:":
        comma = url.find(",", 0, 80)
        head = url[: comma + 1] if comma >= 0 else url[:20]
        return f"{head}... ({len(url)} chars)"
    return url if len(url) <= 200 else url[:197] + "..."


# --- kind inference --------------------------------------------------------------------

_EXTENSION_KINDS: dict[str, MediaKind] = {
    **dict.fromkeys(("mp4", "mov", "webm", "mkv", "avi", "m4v", "mpg", "mpeg"), MediaKind.VIDEO),
    **dict.fromkeys(
        ("png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "avif", "heic", "svg"),
        MediaKind.IMAGE,
    ),
    **dict.fromkeys(("mp3", "wav", "flac", "ogg", "oga", "m4a", "aac", "opus"), MediaKind.AUDIO),
    **dict.fromkeys(("glb", "gltf", "obj", "fbx", "usdz", "stl", "ply"), MediaKind.MODEL),
    # Known non-media: decide here rather than let a key name like "video_config" guess.
    **dict.fromkeys(("safetensors", "ckpt", "pt", "json", "yaml", "txt", "zip"), MediaKind.OTHER),
}
_TOKEN_KINDS: dict[str, MediaKind] = {
    **dict.fromkeys(("video", "videos", "vid", "clip", "clips"), MediaKind.VIDEO),
    **dict.fromkeys(
        ("image", "images", "img", "imgs", "thumbnail", "thumb", "texture", "textures", "mask")
        + ("masks", "picture", "photo", "frame", "frames"),
        MediaKind.IMAGE,
    ),
    **dict.fromkeys(("audio", "audios", "sound", "music", "speech", "voice"), MediaKind.AUDIO),
    **dict.fromkeys(("model", "mesh", "meshes", "glb", "gltf", "obj", "fbx", "usdz"), MediaKind.MODEL),
}
_CONTENT_TYPE_KINDS = {
    "video": MediaKind.VIDEO,
    "image": MediaKind.IMAGE,
    "audio": MediaKind.AUDIO,
    "model": MediaKind.MODEL,
}


def _infer_kind(keys: tuple[str, ...], extension: str | None, content_type: str | None) -> MediaKind:
    """Extension first (it names the actual file), then key names, then content_type.

    content_type is last because fal sends ``application/octet-stream`` for real videos.
    """
    if extension in _EXTENSION_KINDS:
        return _EXTENSION_KINDS[extension]
    for key in reversed(keys):
        kind = _key_kind(key)
        if kind is not None:
            return kind
    if content_type:
        major = content_type.split("/", 1)[0].strip().lower()
        return _CONTENT_TYPE_KINDS.get(major, MediaKind.OTHER)
    return MediaKind.OTHER


def _key_kind(key: str) -> MediaKind | None:
    # The head noun comes last in English keys ("video_thumbnail" is an image), so scan
    # tokens from the end.
    for token in reversed(_TOKEN_RE.findall(key[:_MAX_PATH_KEY])):
        kind = _TOKEN_KINDS.get(token.lower())
        if kind is not None:
            return kind
    return None


def _known_extension(*names: str | None) -> str | None:
    """The first extension among ``names`` (file name, URL path) that names a kind."""
    for name in names:
        last = (name or "").rsplit("/", 1)[-1]
        ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
        if ext in _EXTENSION_KINDS:
            return ext
    return None


# --- app link --------------------------------------------------------------------------


def parse_app_link(query_string: str | bytes) -> AppLink | None:
    """Parse ``table``/``id``/``variant`` from the webhook URL's query string.

    Returns None when none of the three is present (a webhook not tied to an app row);
    raises ``InvalidLinkError`` for partial, repeated or invalid values.
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("utf-8", "replace")
    try:
        params = parse_qs(query_string, keep_blank_values=True, max_num_fields=50)
    except ValueError:
        raise InvalidLinkError("too many query parameters") from None
    present = [name for name in ("table", "id", "variant") if name in params]
    if not present:
        return None
    for name in present:
        if len(params[name]) > 1:
            raise InvalidLinkError(f"query parameter {name!r} is given more than once")
    missing = [name for name in ("table", "id", "variant") if name not in params]
    if missing:
        raise InvalidLinkError(f"table, id and variant go together; missing {', '.join(missing)}")
    return _link(params["table"][0], params["id"][0], params["variant"][0])


def _link(table: str, raw_id: str, variant: str) -> AppLink:
    variants = VALID_LINKS.get(table)
    if variants is None:
        raise InvalidLinkError(f"table must be one of {', '.join(sorted(VALID_LINKS))}")
    if variant not in variants:
        raise InvalidLinkError(f"variant for {table} must be one of {', '.join(sorted(variants))}")
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18 or int(raw_id) == 0:
        raise InvalidLinkError("id must be a positive integer")
    return AppLink(table, int(raw_id), variant)

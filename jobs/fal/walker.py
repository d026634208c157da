"""Find every media file a fal result references, anywhere in its JSON.

``payload`` is each model's own output schema, so instead of knowing the schemas the walker
visits the whole tree: any object with a ``url`` string (fal's File/Image) and any bare
http(s)/``data:`` string is a media reference. The body is already bounded in bytes, so
every value is visited, however large a sibling array (TTS alignments, embeddings) is.

The walk is iterative (a stack of iterators, one per open container, so a deep body
cannot exhaust the Python stack) and allocates nothing per scalar: a value's path is
spelled out only when a reference or problem is found there.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from jobs.fal.kinds import MAX_KEY_CHARS, MediaKind, infer_kind, known_extension

logger = logging.getLogger(__name__)

DEFAULT_MAX_DATA_BYTES = 10 * 1024 * 1024
# References kept per result (jobs.fal.plan keeps as many files). Once that many good or
# that many bad URLs were seen, further URLs are only counted: a body of a million URLs
# then costs a set insert each, not a parsed reference each.
DEFAULT_MAX_REFS = 1000
MAX_PROBLEMS = 50  # bad URLs described (they end up in a note that is cut anyway)
# json.loads refuses a body nested about this deep (Python's recursion limit), so for a
# webhook this never cuts anything; it bounds direct callers.
DEFAULT_MAX_DEPTH = 1000
MAX_URL_LENGTH = 8192  # longer http(s) strings are reported, not queued
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Whole-string http(s) URL without whitespace, or an RFC 2397 data: URI header.
_BARE_URL_RE = re.compile(r"(?i)(?:https?://\S*\Z|data:(?:[\w.+-]+/[\w.+-]+)?(?:;[^,;\s]*)*,)")
_URL_FIRST_CHARS = frozenset("hHdD")  # a cheap test before the regex, for every string
_SPACE_OR_CONTROL_RE = re.compile(r"[\s\x00-\x1f]")  # \s is str.isspace() for str patterns


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
    media: tuple[MediaRef, ...] = ()
    problems: tuple[MediaProblem, ...] = ()
    nodes_visited: int = 0
    truncated: bool = False  # containers deeper than max_depth were skipped
    more_problems: int = 0  # bad URLs past MAX_PROBLEMS, not described
    unexamined: int = 0  # distinct URLs past the max_refs bounds, neither kept nor checked


# A path is built lazily: the root's name, or (parent path, key or list index).
_Path = str | tuple["_Path", str | int]
_Keys = tuple[str, ...]  # the nearest two key names, innermost last (for kind hints)


@dataclass
class _Walk:
    max_data_bytes: int
    max_refs: int
    media: list[MediaRef] = field(default_factory=list)
    problems: list[MediaProblem] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # url -> position in media
    seen_problems: set[str] = field(default_factory=set)
    unexamined: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Hints:
    file_name: str | None = None
    content_type: str | None = None
    file_size: int | None = None


_NO_HINTS = _Hints()


def find_media(
    payload: object,
    *,
    root: str = "payload",
    max_data_bytes: int = DEFAULT_MAX_DATA_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_refs: int = DEFAULT_MAX_REFS,
) -> MediaScan:
    """Collect every media reference under ``payload``, in document order, de-duplicated.

    Never raises on JSON-shaped input. Containers nested deeper than ``max_depth`` are
    skipped (``truncated``); references past the first ``max_refs`` are counted only.
    """
    if max_depth < 1 or max_refs < 1:
        raise ValueError("max_depth and max_refs must be at least 1")
    walk = _Walk(max_data_bytes, max_refs)
    # One frame per open container: (its remaining children, is it a list, path, keys, depth).
    stack: list[tuple[Iterator[tuple[Any, object]], bool, _Path, _Keys, int]] = []
    visited = 1
    truncated = False

    def enter(value: dict[Any, object] | list[object], path: _Path, keys: _Keys, depth: int) -> None:
        nonlocal truncated
        if depth >= max_depth:
            truncated = True
            return
        if isinstance(value, list):
            stack.append((enumerate(value), True, path, keys, depth))
            return
        url = value.get("url")
        items: Iterable[tuple[Any, object]] = value.items()
        if isinstance(url, str):
            _add(walk, path, keys, url, _hints(value), require_url=True)
            items = ((k, v) for k, v in value.items() if k != "url")  # url is taken
        stack.append((iter(items), False, path, keys, depth))

    if isinstance(payload, dict | list):
        enter(payload, root, (), 0)
    elif isinstance(payload, str) and _looks_like_url(payload):
        _add(walk, root, (), payload, _NO_HINTS, require_url=False)
    while stack:
        children, is_list, path, keys, depth = stack[-1]
        for key, value in children:
            visited += 1
            if isinstance(value, str):
                if value[:1] in _URL_FIRST_CHARS and _looks_like_url(value):
                    child_keys = keys if is_list else (*keys[-1:], str(key))
                    _add(
                        walk,
                        (path, key if is_list else str(key)),
                        child_keys,
                        value,
                        _NO_HINTS,
                        require_url=False,
                    )
            elif isinstance(value, dict | list) and value:  # an empty one holds nothing
                child_keys = keys if is_list else (*keys[-1:], str(key))
                enter(value, (path, key if is_list else str(key)), child_keys, depth + 1)
                break  # walk the child first, so references stay in document order
        else:
            stack.pop()
    if truncated:
        logger.warning("fal payload nested deeper than %d levels; deeper values skipped", max_depth)
    return MediaScan(
        tuple(walk.media),
        tuple(walk.problems),
        visited,
        truncated,
        len(walk.seen_problems) - len(walk.problems),
        len(walk.unexamined),
    )


def _render(path: _Path) -> str:
    parts: list[str | int] = []
    while isinstance(path, tuple):
        path, part = path
        parts.append(part)
    text = [path]
    for part in reversed(parts):
        text.append(f"[{part}]" if isinstance(part, int) else _key_segment(part))
    return "".join(text)


def _key_segment(key: str) -> str:
    if len(key) > MAX_KEY_CHARS:
        key = key[: MAX_KEY_CHARS - 3] + "..."
    if _IDENTIFIER_RE.fullmatch(key):
        return f".{key}"
    return f"[{json.dumps(key)}]"


def _hints(obj: dict[Any, object]) -> _Hints:
    name, ctype, size = obj.get("file_name"), obj.get("content_type"), obj.get("file_size")
    return _Hints(
        name if isinstance(name, str) and name else None,
        ctype if isinstance(ctype, str) and ctype else None,
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
    )


def _looks_like_url(text: str) -> bool:
    """A bare string counts only if it is wholly a URL, so prose ("data: 5 rows") is skipped."""
    return _BARE_URL_RE.match(text) is not None


def _add(walk: _Walk, path: _Path, keys: _Keys, url: str, hints: _Hints, *, require_url: bool) -> None:
    if url in walk.index:
        if hints != _NO_HINTS:
            _merge_hints(walk, url, hints)
        return
    if url in walk.seen_problems:
        return
    lowered = url[:8].lower()
    if not (require_url or lowered.startswith(("data:", "http://", "https://"))):
        return
    if len(walk.media) >= walk.max_refs or len(walk.seen_problems) >= walk.max_refs:
        walk.unexamined.add(url)
        return
    where = _render(path)
    if lowered.startswith("data:"):
        ref_or_error: MediaRef | str = _data_ref(url, where, keys, hints, walk.max_data_bytes)
    elif lowered.startswith(("http://", "https://")):
        ref_or_error = _http_ref(url, where, keys, hints)
    else:
        ref_or_error = "unsupported URL (expected http, https or data:)"
    if isinstance(ref_or_error, str):
        walk.seen_problems.add(url)
        if len(walk.problems) < MAX_PROBLEMS:
            walk.problems.append(MediaProblem(where, _display_url(url), ref_or_error))
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


def _http_ref(url: str, path: str, keys: _Keys, hints: _Hints) -> MediaRef | str:
    if len(url) > MAX_URL_LENGTH:
        return f"URL longer than {MAX_URL_LENGTH} characters"
    if _SPACE_OR_CONTROL_RE.search(url):
        return "URL contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "URL cannot be parsed"
    if not host:
        return "URL has no host"
    kind = infer_kind(keys, known_extension(hints.file_name, parts.path), hints.content_type)
    return MediaRef(url, path, kind, hints.file_name, hints.content_type, hints.file_size)


def _data_ref(url: str, path: str, keys: _Keys, hints: _Hints, cap: int) -> MediaRef | str:
    decoded = decode_data_uri(url, cap)
    if isinstance(decoded, str):
        return decoded
    mediatype, data = decoded
    ctype = hints.content_type or mediatype or None  # the URI's own type fills a missing hint
    kind = infer_kind(keys, known_extension(hints.file_name), ctype)
    return MediaRef(url, path, kind, hints.file_name, ctype, hints.file_size, data)


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

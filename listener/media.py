"""The media resolver: a link the app can use in place of every fal URL it stores.

- `GET /media?src=<fal URL>`: 302 to fal while fal guarantees the file (inside
  expires_at, not known gone); after that the first readable copy in FALBACK_DESTINATIONS
  order: a 302 to a short-lived signed link for S3, streamed through for Drive and the
  local folder.
- `GET /media/<media_id>`: the same for one file by its random id (backup_media_url).

Knowing the fal URL, or the media id, is the right to see the file: both are unguessable,
and nothing else (a table and row id) finds one. A source URL the ledger does not know
is redirected to only if its host is one of fal's (FALBACK_SOURCE_HOSTS): never an open
redirect. Range, If-Range, ETag and HEAD: listener/ranges.py; readers per destination:
listener/media_sources.py. docs/media.md.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, abort, current_app, request

from core.config import Config
from core.media_links import MEDIA_ID
from db import media as media_db
from db.media import CopyAt, MediaFile
from jobs.address_guard import host_allowed
from listener import ranges
from listener.context import get_config, get_db
from listener.media_sources import OPENERS, Backup, BackupMissing, BackupUnavailable, Redirect

log = logging.getLogger(__name__)
bp = Blueprint("media", __name__)

MAX_SRC_LENGTH = 4096
# A redirect to fal must not outlive fal's guarantee in a cache.
REDIRECT_MAX_AGE = 300
# Served inline; anything else is a download, so a stored text/html cannot run as a page
# of this origin.
_INLINE_TYPES = ("video/", "audio/", "image/")
_INLINE_EXCEPTIONS = ("image/svg+xml",)


@bp.get("/media")
def by_source() -> Response:
    src = request.args.get("src", "")
    if not src or len(src) > MAX_SRC_LENGTH or not src.isprintable() or " " in src:
        abort(400, description="src must be the file's fal URL")
    parts = urlsplit(src)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        abort(400, description="src must be an http(s) URL")
    config = get_config()
    file = media_db.by_source_url(get_db(), src, config.expiry_days)
    if file is None:
        if host_allowed(parts.hostname, config.source_hosts):
            return _to_fal(src)  # not (yet) in the ledger: fal is the only copy
        abort(404)
    return _resolve(file, config)


@bp.get("/media/<media_id>")
def by_id(media_id: str) -> Response:
    if not MEDIA_ID.fullmatch(media_id):
        abort(404)
    config = get_config()
    file = media_db.by_media_id(get_db(), media_id, config.expiry_days)
    if file is None:
        abort(404)
    return _resolve(file, config)


def _resolve(file: MediaFile, config: Config) -> Response:
    redirectable = host_allowed(urlsplit(file.source_url).hostname or "", config.source_hosts)
    if file.fal_fresh and file.status != "gone" and redirectable:
        return _to_fal(file.source_url)
    unavailable = False
    for copy in _by_preference(file.copies, config.destination_names):
        opener = OPENERS.get(copy.destination)
        if opener is None:
            log.error("ledger %s: no reader for destination %r", file.id, copy.destination)
            unavailable = True
            continue
        try:
            backup = opener(file, copy, config, current_app._get_current_object())  # type: ignore[attr-defined]
            if isinstance(backup, Redirect):
                return _to_copy(file, backup)
            if backup is not None:
                return _serve(file, backup)
        except BackupMissing:
            pass
        except BackupUnavailable as e:
            # The next copy, if there is one, may be readable.
            log.warning("ledger %s: the %s copy could not be read: %s", file.id, copy.destination, e)
            unavailable = True
            continue
        log.warning("ledger %s: the %s copy is missing", file.id, copy.destination)
    if unavailable:
        abort(502, description="the backup could not be read just now; try again")
    abort(404)


def _by_preference(copies: tuple[CopyAt, ...], names: tuple[str, ...]) -> list[CopyAt]:
    """The configured destinations' copies in FALBACK_DESTINATIONS order, then any other
    (a destination since dropped from the list)."""
    rank = {name: n for n, name in enumerate(names)}
    return sorted(copies, key=lambda c: (rank.get(c.destination, len(rank)), c.destination))


def _to_fal(url: str) -> Response:
    response = Response(status=302, headers={"Location": url})
    response.headers["Cache-Control"] = f"private, max-age={REDIRECT_MAX_AGE}"
    return response


def _to_copy(file: MediaFile, copy: Redirect) -> Response:
    """A redirect to a signed link of the copy's store, which serves ranges itself."""
    content_type, inline = _content_type(file, None)
    url = copy.sign(request.method == "HEAD", content_type, _disposition(file, inline))
    response = Response(status=302, headers={"Location": url})
    # A cached redirect must not outlive the link.
    response.headers["Cache-Control"] = f"private, max-age={min(REDIRECT_MAX_AGE, copy.seconds // 3)}"
    return response


def _serve(file: MediaFile, backup: Backup) -> Response:
    etag = f'"{file.md5}"' if file.md5 else f'"{file.media_id}-{backup.size}"'
    plan = ranges.plan(backup.size, request.headers, etag, file.done_at)
    response = Response(status=plan.status)
    headers = response.headers
    headers["Accept-Ranges"] = "bytes"
    headers["ETag"] = etag
    if file.done_at is not None:
        response.last_modified = file.done_at
    # The copy never changes: a browser may keep it; shared caches may not (the link is the
    # right to see it).
    headers["Cache-Control"] = "private, max-age=86400"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    content_type, inline = _content_type(file, backup)
    if plan.status in (304, 416):
        if plan.status == 416:
            headers["Content-Range"] = plan.content_range(backup.size) or ""
        headers["Content-Length"] = "0"
        return response
    headers["Content-Type"] = content_type
    headers["Content-Disposition"] = _disposition(file, inline)
    headers["Content-Length"] = str(plan.length)
    content_range = plan.content_range(backup.size)
    if content_range:
        headers["Content-Range"] = content_range
    if request.method == "HEAD" or plan.length == 0:
        return response
    body: Iterator[bytes] = backup.read(plan.first, plan.length)
    response.response = body
    response.direct_passthrough = True
    return response


def _content_type(file: MediaFile, backup: Backup | None) -> tuple[str, bool]:
    kept = file.content_type or (backup.content_type if backup else None)
    stored = (kept or "").split(";")[0].strip().lower()
    guessed = mimetypes.guess_type(file.file_name or urlsplit(file.source_url).path)[0]
    content_type = stored if stored and stored != "application/octet-stream" else (guessed or "")
    inline = content_type.startswith(_INLINE_TYPES) and content_type not in _INLINE_EXCEPTIONS
    return (content_type if inline else "application/octet-stream"), inline


def _disposition(file: MediaFile, inline: bool) -> str:
    name = file.file_name or urlsplit(file.source_url).path.rsplit("/", 1)[-1] or "file"
    return f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{quote(name, safe='')}"

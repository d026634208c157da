"""Where the media resolver reads a backup from: one opener per destination.

`OPENERS[destination](file, copy, config, app)` returns a `Backup` (its size and a way to
read a byte range in chunks), a `Redirect` (the store serves the bytes itself, by a
short-lived signed link: S3), or None when the copy is not there (any more). Adding a
destination is one function here and one entry in OPENERS; listener/media.py does the
rest (ranges, validators, headers) the same way for every destination.

Every reader streams: memory stays constant whatever the file's size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from google.auth.exceptions import GoogleAuthError

from core.config import Config
from db.media import CopyAt, MediaFile
from jobs.destinations import drive_auth, s3_client

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
YIELD_EVERY = 16  # chunks (4 MiB)
# One AuthorizedSession per web process: it keeps the token and reuses connections.
DRIVE_SESSION_EXTENSION = "falback_drive_media_session"


class BackupUnavailable(Exception):
    """The destination could not be read just now (502, not 404)."""


class BackupMissing(Exception):
    """The destination no longer has the copy (found out when reading it: 404)."""


@dataclass(frozen=True)
class Backup:
    size: int
    # (first, length) -> the bytes, in chunks. Called only for a GET that sends a body.
    read: Callable[[int, int], Iterator[bytes]]
    content_type: str | None = None


@dataclass(frozen=True)
class Redirect:
    """The copy is fetched from its store directly, by a link that works for `seconds`."""

    seconds: int
    # (a HEAD request?, content type, content disposition) -> the signed URL.
    sign: Callable[[bool, str, str], str]


# Presigned S3 links handed to browsers live this long (or FALBACK_S3_PRESIGN_SECONDS when
# shorter): long enough to play a video through, short enough that a leaked link dies soon.
S3_LINK_SECONDS = 15 * 60

Opener = Callable[[MediaFile, CopyAt, Config, Flask], "Backup | Redirect | None"]


def open_local(file: MediaFile, copy: CopyAt, config: Config, app: Flask) -> Backup | None:
    """A file under FALBACK_BACKUP_DIR; a location that resolves outside it (a symlink,
    `..`) is refused."""
    root = config.backup_dir.resolve()
    path = (root / copy.location).resolve()
    if not path.is_relative_to(root) or path == root:
        log.warning(
            "ledger %s: local copy %r is outside the backup folder; not served", file.id, copy.location
        )
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if not path.is_file():
        return None
    return Backup(size, lambda first, length: _read_file(path, first, length))


def _read_file(path: Path, first: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(first)
        left = length
        sent = 0
        while left > 0:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                return  # the file shrank under us: the client sees a short body
            left -= len(chunk)
            yield chunk
            sent += 1
            if sent % YIELD_EVERY == 0:
                # Disk reads never block in gevent's eyes, and a fast client never fills the
                # socket: let the other greenlets (and the worker's heartbeat) run.
                time.sleep(0)


def open_drive(file: MediaFile, copy: CopyAt, config: Config, app: Flask) -> Backup | None:
    """files.get?alt=media with the range forwarded, streamed through (reference:
    google-drive.md section 6: a browser cannot play Drive links itself)."""
    settings = config.drive
    if settings is None:
        log.warning("ledger %s: the copy is in Drive but Drive is not configured", file.id)
        return None
    session = _drive_session(config, app)
    url = f"{settings.api_base_url}/drive/v3/files/{copy.location}"
    size = copy.size_bytes
    if size is None:
        meta = _drive_get(
            session, url, {"fields": "size", "supportsAllDrives": "true"}, {}, config, stream=False
        )
        if meta is None:
            return None
        size = int(meta.json()["size"])

    def read(first: int, length: int) -> Iterator[bytes]:
        params = {"alt": "media", "supportsAllDrives": "true"}
        headers = {"Range": f"bytes={first}-{first + length - 1}"} if length else {}
        answer = _drive_get(session, url, params, headers, config, stream=True)
        if answer is None:
            raise BackupMissing(f"Drive has no file {copy.location}")
        if answer.status_code == 200 and (first, length) != (0, size):
            answer.close()
            raise BackupUnavailable("Drive ignored the Range header")
        return _iterate(answer)

    return Backup(size, read)


def _iterate(answer: requests.Response) -> Iterator[bytes]:
    try:
        yield from answer.iter_content(CHUNK)
    finally:
        answer.close()


def _drive_get(
    session: Any, url: str, params: dict[str, str], headers: dict[str, str], config: Config, *, stream: bool
) -> requests.Response | None:
    assert config.drive
    try:
        answer: requests.Response = session.get(
            url,
            params=params,
            headers=headers,
            stream=stream,
            allow_redirects=False,
            timeout=(config.connect_timeout, config.drive.timeout),
        )
    except GoogleAuthError as e:
        raise BackupUnavailable(drive_auth.explain(e, config.drive)) from None
    except requests.RequestException as e:
        raise BackupUnavailable(f"Drive did not answer: {type(e).__name__}") from None
    if answer.status_code == 404:
        answer.close()
        return None
    if answer.status_code not in (200, 206):
        answer.close()
        raise BackupUnavailable(f"Drive answered {answer.status_code}")
    return answer


def _drive_session(config: Config, app: Flask) -> Any:
    session = app.extensions.get(DRIVE_SESSION_EXTENSION)
    if session is None:
        assert config.drive
        try:
            creds = drive_auth.credentials(config.drive)
        except (ValueError, GoogleAuthError) as e:
            raise BackupUnavailable(f"Drive credentials: {type(e).__name__}") from None
        session = app.extensions[DRIVE_SESSION_EXTENSION] = drive_auth.session(config.drive, creds)
    return session


def open_s3(file: MediaFile, copy: CopyAt, config: Config, app: Flask) -> Redirect:
    """A presigned GetObject (HeadObject for a HEAD) of the copy's key: the browser gets
    the bytes, ranges included, from the store, and none pass through falback. The link
    names the content type and disposition the store must answer with."""
    settings = config.s3
    if settings is None:
        raise BackupUnavailable("the copy is in S3 but FALBACK_S3_* is not configured")
    seconds = min(S3_LINK_SECONDS, settings.presign_seconds)

    def sign(head: bool, content_type: str, disposition: str) -> str:
        params = {"Bucket": settings.bucket, "Key": copy.location}
        if not head:
            params |= {"ResponseContentType": content_type, "ResponseContentDisposition": disposition}
        try:
            return str(
                s3_client.client(settings).generate_presigned_url(
                    "head_object" if head else "get_object", Params=params, ExpiresIn=seconds
                )
            )
        except Exception as e:  # signing is local: only a broken configuration fails here
            raise BackupUnavailable(f"S3 link could not be signed: {type(e).__name__}") from None

    return Redirect(seconds, sign)


# destination (copies.destination) -> its opener.
OPENERS: dict[str, Opener] = {"local": open_local, "drive": open_drive, "s3": open_s3}

"""One attempt's resumable upload to Drive, streamed one chunk at a time.

It is given plain inputs (the file's metadata, its size if known, a SessionStore) and
returns the file resource Drive ends up holding; where the file goes and whether it is
right is drive.py's business. It speaks only Drive: failures leave as DriveFailure.

Memory stays flat: at most about one chunk (GOOGLE_DRIVE_CHUNK_SIZE) is buffered. Every
chunk but the last is exactly that long, a multiple of 256 KiB as Drive requires, and
starts where Drive's last 308 said it stands, so an acknowledgement that ends off a
256 KiB boundary only shifts the chunks. The session URI and the confirmed offset are
saved after every chunk; a later attempt asks Drive where the session stands
(`bytes */N`) and sends only what Drive lacks. Errors on a chunk are ridden out with
backoff, each time asking Drive how much it holds first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from core.drive_settings import CHUNK_UNIT
from jobs.destinations.drive_api import DriveApi
from jobs.destinations.drive_errors import (
    DriveApiError,
    DriveAuthError,
    DriveFailure,
    FolderGone,
    ReservedIdTaken,
    SessionRestart,
    backoff,
)
from jobs.destinations.drive_resumable import ChunkAnswer
from jobs.destinations.drive_store import SessionStore

log = logging.getLogger(__name__)

# Drive's guide: simple and multipart uploads are for files of 5 MB or less.
MULTIPART_MAX = 5 * 1024 * 1024
NEW_SESSION = "the next attempt starts a new upload session"


class DriveUpload:
    """`write` sends every full chunk as it fills; `finish` sends the rest (or, for a small
    file never started, the whole file in one multipart request)."""

    def __init__(
        self, api: DriveApi, store: SessionStore, metadata: Mapping[str, Any], size: int | None
    ) -> None:
        self.api, self.store, self.size = api, store, size
        self.metadata = dict(metadata)
        self.file_id = str(metadata["id"])
        self.chunk_size = api.settings.chunk_size
        assert self.chunk_size % CHUNK_UNIT == 0, "settings keep chunks to multiples of 256 KiB"
        self.offset = 0  # bytes Drive confirmed; the job skips them
        self.uri: str | None = None
        self.file: dict[str, Any] | None = None  # set once Drive holds the complete file
        self.buffer = bytearray()  # bytes from `offset` on, not yet confirmed
        self.failures = 0  # tries in a row that moved nothing; reset by progress

    def resume(self, uri: str) -> None:
        """Continue a saved session from where Drive stands, or start over if it expired."""
        try:
            answer = self.api.uploads.query(uri, self.size)
        except DriveApiError as e:
            if e.retryable or e.status not in (400, 404, 410):
                raise
            log.info(
                "%s: the saved upload session is gone (%s); starting a new one", self.api.label, e.status
            )
            self.store.save_session(None, 0)
            return
        self.uri = uri
        if answer.file is not None:
            self.file = answer.file
            log.info("%s: the saved upload session had finished", self.api.label)
            return
        self.offset = answer.confirmed
        self.store.save_session(uri, self.offset)
        log.info(
            "%s: resuming the upload at byte %d of %s",
            self.api.label,
            self.offset,
            self.size if self.size is not None else "unknown",
        )

    def write(self, chunk: bytes) -> None:
        if self.file is not None:
            return  # Drive has the whole file already; `finish` returns it
        self.buffer += chunk
        while self.file is None and self._chunk_ready():
            if self.uri is None:
                self._start_session()
            else:
                self._put(self.chunk_size, self.size)

    def finish(self, size: int, md5: str) -> dict[str, Any]:
        """Send what is left and return the file Drive holds: this upload's, or the one an
        earlier or concurrent attempt made under the same id (a 409)."""
        if self.file is None:
            self.store.record_sent(size, md5)
            if self.uri is None and self.offset == 0 and size <= MULTIPART_MAX:
                self._create_at_once()
        while self.file is None:
            if self.uri is None:
                self._start_session()
            else:  # the last PUT: an empty `bytes */N` when the data ended on a chunk
                self._put(len(self.buffer), size)
        return self.file

    def abandon(self) -> None:
        # The session stays saved: the next attempt resumes it.
        self.buffer = bytearray()

    # -- sending

    def _chunk_ready(self) -> bool:
        """A whole chunk is buffered and it is not the last one (the MD5 is recorded
        before the last bytes go out, so `finish` sends those)."""
        if len(self.buffer) < self.chunk_size:
            return False
        return self.size is None or (self.offset + self.chunk_size < self.size and self.size > MULTIPART_MAX)

    def _put(self, n: int, total: int | None) -> None:
        """One PUT of the first `n` buffered bytes; then move on by what Drive confirms.
        With `total` the final size and `n` the whole buffer, it is the last one."""
        assert self.uri is not None
        start = self.offset
        # A view, not a copy: requests and urllib3 hand it to sendall() as it is, so a
        # chunk costs its buffer only. The buffer is never resized while viewed.
        data = memoryview(self.buffer)[:n]
        where = f"{start}-{start + n - 1}" if n else "*"
        of = "*" if total is None else total
        try:
            answer = self.api.uploads.put(self.uri, data, f"bytes {where}/{of}", "send a chunk")
        except DriveFailure as e:
            # The failed PUT's view can outlive it (in the error's traceback); a fresh
            # buffer keeps the next append legal.
            self.buffer = bytearray(self.buffer)
            answer = self._recover(e, total)
            self.failures += 1
        else:
            if answer.file is None and answer.confirmed <= start:
                self.failures += 1  # Drive took none of it: count it like an error
                if self.failures > self.api.settings.max_retries:
                    raise DriveFailure(f"Drive kept none of the bytes from {start} on")
        self._advance(answer)

    def _recover(self, error: DriveFailure, total: int | None) -> ChunkAnswer:
        """After a failed PUT: wait, then ask Drive how much of the session it holds."""
        assert self.uri is not None
        if isinstance(error, DriveAuthError):
            raise error
        if isinstance(error, DriveApiError) and not error.retryable:
            if error.status == 409:  # another attempt completed this file id
                return ChunkAnswer(0, self._existing())
            if error.upload_cap:  # the session stays: it resumes after the pause
                raise error
            # 404/410: the session expired; any other 4xx: Drive's guide says start over.
            self._restart(error)
        delay = backoff(self.api.settings, self.failures, error.retry_after)
        if delay is None:
            raise error
        log.warning("%s: %s; asking Drive where the upload stands in %.1fs", self.api.label, error, delay)
        time.sleep(delay)
        try:
            return self.api.uploads.query(self.uri, total)
        except DriveApiError as e:
            if e.retryable:
                raise
            self._restart(e)

    def _advance(self, answer: ChunkAnswer) -> None:
        if answer.file is not None:
            self.file = answer.file
            self.buffer = bytearray()
            return
        taken = answer.confirmed - self.offset
        if taken < 0 or taken > len(self.buffer):
            self._restart(
                None,
                f"Drive confirmed byte {answer.confirmed} while {self.offset} to"
                f" {self.offset + len(self.buffer)} were in flight",
            )
        if not taken:
            return
        # A new buffer (not `del`): the chunk's view above is released, but a copy keeps
        # this safe whoever else holds one.
        self.buffer = self.buffer[taken:]
        self.offset = answer.confirmed
        self.failures = 0
        self.store.save_session(self.uri, self.offset)

    def _restart(self, error: DriveApiError | None, what: str = "") -> NoReturn:
        """Drop the session (the next attempt opens a new one) and end this attempt."""
        self.store.save_session(None, 0)
        self.uri = None
        raise SessionRestart(f"{what or error}; {NEW_SESSION}", error)

    def _start_session(self) -> None:
        try:
            self.uri = self.api.uploads.start_session(self.metadata, self.size, self.metadata["mimeType"])
        except DriveApiError as e:
            self._created_elsewhere(e)
            return
        self.store.save_session(self.uri, 0)
        log.info("%s: upload session started for Drive file %s", self.api.label, self.file_id)

    def _create_at_once(self) -> None:
        try:
            # A view, released on leaving (even in an error's traceback): the request's
            # body is the one copy of the file's bytes.
            with memoryview(self.buffer) as data:
                self.file = self.api.uploads.multipart(self.metadata, data, self.metadata["mimeType"])
        except DriveApiError as e:
            self._created_elsewhere(e)

    def _created_elsewhere(self, error: DriveApiError) -> None:
        """A create failed: 409 means the reserved id exists (an earlier or concurrent
        attempt made it), which the caller then checks; a 404 means the folder is gone."""
        if error.status == 409:
            log.info("%s: Drive file %s exists already; checking it", self.api.label, self.file_id)
            self.file = self._existing()
            return
        if error.status == 404:
            raise FolderGone(str(error)) from error
        raise error

    def _existing(self) -> dict[str, Any]:
        file = self.api.get_file(self.file_id, trashed_too=True)
        if file is None or file.get("trashed"):
            raise ReservedIdTaken(f"Drive file {self.file_id} exists but is trashed or hidden")
        return file

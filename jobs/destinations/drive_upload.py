"""One attempt's resumable upload to Drive, streamed one chunk at a time.

Memory stays flat: at most one chunk (GOOGLE_DRIVE_CHUNK_SIZE) is buffered. The session
URI and the offset Drive confirmed are saved after every chunk; a later attempt asks
Drive where the session stands (`bytes */N`) and sends only what Drive lacks. Errors on
a chunk are ridden out with backoff, each time asking Drive how much it holds first.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from core.drive_settings import CHUNK_UNIT
from db.ledger import LedgerRow
from jobs.destinations.base import StoredFile
from jobs.destinations.drive_api import (
    ChunkAnswer,
    DriveApiError,
    DriveAuthError,
    DriveFailure,
    classified,
    copy_error,
    upload_cap_pause,
)
from jobs.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from jobs.destinations.drive import DriveDestination

log = logging.getLogger(__name__)

# Drive's guide: simple and multipart uploads are for files of 5 MB or less.
MULTIPART_MAX = 5 * 1024 * 1024


class DriveUpload:
    """One attempt's upload. `write` sends every full chunk as it fills; `finish` sends the
    rest (or, for a small file never started, the whole file in one multipart request)."""

    def __init__(self, dest: DriveDestination, row: LedgerRow, size: int | None,
                 file_id: str) -> None:
        self.dest, self.api, self.row, self.size = dest, dest.api, row, size
        self.file_id = file_id
        self.chunk_size = dest.settings.chunk_size
        self.offset = 0  # bytes Drive confirmed; the job skips them
        self.uri: str | None = None
        self.file: dict[str, Any] | None = None  # set once Drive holds the complete file
        self.buffer = bytearray()  # bytes from `offset` on, not yet confirmed

    def resume(self, uri: str) -> None:
        """Continue a saved session from where Drive stands, or start over if it expired."""
        try:
            answer = self.api.query(uri, self.size)
        except DriveApiError as e:
            if e.retryable or e.status not in (400, 404, 410):
                raise
            log.info("%s: the saved upload session is gone (%s); starting a new one", self.api.label,
                     e.status)
            self.dest.save_session(self.row, None, 0)
            return
        self.uri = uri
        if answer.file is not None:
            self.file = answer.file
            log.info("%s: the saved upload session had finished", self.api.label)
            return
        self.offset = answer.confirmed
        self.dest.save_session(self.row, uri, self.offset)
        log.info("%s: resuming the upload at byte %d of %s", self.api.label, self.offset,
                 self.size if self.size is not None else "unknown")

    def write(self, chunk: bytes) -> None:
        if self.file is not None:
            return  # Drive has the whole file already; `finish` checks it against the source
        self.buffer += chunk
        while (n := self._full_chunk()) and self.file is None:
            with classified(self.dest.settings):
                self._send(n, self.size)

    def finish(self, size: int, md5: str) -> StoredFile:
        with classified(self.dest.settings):
            if self.file is None:
                self.dest.record_sent(self.row, self.file_id, size, md5)
                if self.uri is None and self.offset == 0 and size <= MULTIPART_MAX:
                    self._create_at_once()
                else:
                    self._send(len(self.buffer), size)
            return self.dest.verified(self.row, self.file, size, md5)

    def abandon(self) -> None:
        # The session stays saved: the next attempt resumes it.
        self.buffer = bytearray()

    # -- sending

    def _full_chunk(self) -> int:
        """Bytes to send now: a whole chunk ending on a 256 KiB boundary, held back while
        it might be the last one (the MD5 is recorded before the last bytes go out)."""
        end = (self.offset + self.chunk_size) // CHUNK_UNIT * CHUNK_UNIT
        if len(self.buffer) < end - self.offset:
            return 0
        if self.size is not None and (end >= self.size or self.size <= MULTIPART_MAX):
            return 0
        return end - self.offset

    def _send(self, n: int, total: int | None) -> None:
        """Send the first `n` buffered bytes until Drive confirms them, riding out errors
        with backoff. With `total` the final size and `n` the whole buffer, this is the
        last PUT (empty, `bytes */N`, when the data ended on a chunk boundary)."""
        if self.uri is None:
            self._start_session()
        end = self.offset + n
        final = total is not None and end == total
        failures = 0
        while self.file is None and self.uri is not None and (final or self.offset < end):
            start = self.offset
            # A view, not a copy: requests and urllib3 hand it to sendall() as it is, so
            # a chunk costs its buffer only. The buffer is never resized while viewed.
            data = memoryview(self.buffer)[: end - start]
            where = f"{start}-{end - 1}" if data else "*"
            try:
                of = "*" if total is None else total
                answer = self.api.put(self.uri, data, f"bytes {where}/{of}", "send a chunk")
            except DriveFailure as e:
                answer = self._recover(e, failures, total)
                failures += 1
            else:
                if answer.file is None and answer.confirmed <= start:
                    failures += 1  # Drive took none of it: count it like an error
                    if failures > self.dest.settings.max_retries:
                        raise TransientError(f"Drive kept none of the bytes from {start} on")
            self._advance(answer)

    def _recover(self, error: DriveFailure, failures: int, total: int | None) -> ChunkAnswer:
        """After a failed PUT: wait, then ask Drive how much of the session it holds."""
        assert self.uri is not None
        if isinstance(error, DriveAuthError):
            raise error
        if isinstance(error, DriveApiError) and not error.retryable:
            if error.status == 409:  # another attempt completed this file id
                return ChunkAnswer(0, self._existing())
            if error.upload_cap:  # the session stays: it resumes after the pause
                raise upload_cap_pause(error, self.dest.settings)
            # 404/410: the session expired; any other 4xx: Drive's guide says start over.
            self.dest.save_session(self.row, None, 0)
            outcome = copy_error(error, self.dest.settings)
            if isinstance(outcome, PermanentError):
                raise outcome from error
            raise TransientError(f"{error}; the next attempt starts a new upload session") from error
        delay = self.api.backoff(failures, error.retry_after)
        if delay is None:
            raise error
        log.warning("%s: %s; asking Drive where the upload stands in %.1fs", self.api.label,
                    error, delay)
        time.sleep(delay)
        try:
            return self.api.query(self.uri, total)
        except DriveApiError as e:
            if e.retryable:
                raise
            self.dest.save_session(self.row, None, 0)
            raise TransientError(f"{e}; the next attempt starts a new upload session") from e

    def _advance(self, answer: ChunkAnswer) -> None:
        if answer.file is not None:
            self.file = answer.file
            self.buffer = bytearray()
            return
        taken = answer.confirmed - self.offset
        if taken < 0 or taken > len(self.buffer):
            self.dest.save_session(self.row, None, 0)
            raise TransientError(f"Drive confirmed byte {answer.confirmed} while {self.offset} to"
                                 f" {self.offset + len(self.buffer)} were in flight; starting over")
        # A new buffer (not `del`): a view of the old one may still be alive somewhere.
        self.buffer = self.buffer[taken:]
        self.offset = answer.confirmed
        if taken:
            self.dest.save_session(self.row, self.uri, self.offset)

    def _start_session(self) -> None:
        metadata = self.dest.metadata(self.row, self.file_id)
        try:
            self.uri = self.api.start_session(metadata, self.size, metadata["mimeType"])
        except DriveApiError as e:
            self._created_elsewhere(e)
            return
        self.dest.save_session(self.row, self.uri, 0)
        log.info("%s: upload session started for Drive file %s", self.api.label, self.file_id)

    def _create_at_once(self) -> None:
        metadata = self.dest.metadata(self.row, self.file_id)
        try:
            self.file = self.api.multipart(metadata, bytes(self.buffer), metadata["mimeType"])
        except DriveApiError as e:
            self._created_elsewhere(e)

    def _created_elsewhere(self, error: DriveApiError) -> None:
        """A create failed: 409 means the reserved id exists (an earlier or concurrent
        attempt made it), which `finish` then checks; a 404 means the folder is gone."""
        if error.status == 409:
            log.info("%s: Drive file %s exists already; checking it", self.api.label, self.file_id)
            self.file = self._existing()
            return
        if error.status == 404:
            raise self.dest.folders_gone(self.row) from error
        raise error

    def _existing(self) -> dict[str, Any]:
        file = self.api.get_file(self.file_id)
        if file is None:
            raise TransientError(f"Drive says file {self.file_id} exists but does not show it")
        return file

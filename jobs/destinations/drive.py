"""Google Drive as the destination (docs/google-drive.md).

One ledger row, one Drive file. Before the first byte goes out the row gets a Drive file
id of its own (files.generateIds, kept in `drive_files`), and every create names that id:
a retried or concurrent create gets 409 ("exists") and turns into a check of the existing
file instead of a second copy. Files carry appProperties (ledger id, source hash, fal
request id), so a copy is found again even if the ledger forgot its reservation.

Here: the folder a file goes to, its metadata, and the check of what Drive holds. The
upload itself (chunks, resume, errors) is drive_upload.py, which returns the file
resource. The MD5 of what was streamed is recorded just before the last bytes go out;
the finished file's size and md5Checksum must match it, or the copy is moved to Drive's
trash (a Content manager may trash, only a Manager may delete) and the attempt fails.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rq import get_current_job

from core.drive_settings import DriveSettings
from db import drive_state as db
from db.connection import Connection
from db.ledger import LedgerRow
from jobs.destinations.base import StoredFile, month_of, readable_name
from jobs.destinations.drive_advice import copy_error
from jobs.destinations.drive_api import DriveApi
from jobs.destinations.drive_errors import DriveFailure, FolderGone, ReservedIdTaken
from jobs.destinations.drive_folders import Folders, quote
from jobs.destinations.drive_store import SessionStore
from jobs.destinations.drive_upload import DriveUpload
from jobs.errors import TransientError, VerifyError

log = logging.getLogger(__name__)


class DriveDestination:
    name = "drive"

    def __init__(
        self,
        settings: DriveSettings,
        conn: Connection,
        api: DriveApi | None = None,
        database_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.conn = conn
        self.api = api or DriveApi(settings, database_url)
        self.folders = Folders(self.api, conn, settings.folder_id)
        self._released: set[int] = set()  # rows whose reservation (and session) were dropped

    # -- the Destination protocol

    def find(self, row: LedgerRow) -> StoredFile | None:
        """The verified copy of `row`, if an earlier attempt made it. A copy that exists but
        was never checked is left to `open`, which checks it against the source."""
        self._label(row)
        with self.classified(row):
            reservation = db.reservation(self.conn, row.id)
            if reservation is None:
                found = self._search(row)
                if found is not None:
                    # Adopt it: `open` will see 409 on create and check it against the source.
                    db.reserve(self.conn, row.id, str(found["id"]))
                    self.conn.commit()
                    log.info(
                        "%s: found an unrecorded copy %s by its appProperties", self.api.label, found["id"]
                    )
                return None
            file = self.api.get_file(reservation.file_id, trashed_too=True)
            if file is not None and file.get("trashed"):
                self._release(row, reservation.file_id)  # someone trashed it: start afresh
                return None
            if file is None or reservation.sent_md5 is None:
                return None
            if (int(file.get("size") or -1), file.get("md5Checksum")) == (
                reservation.sent_size,
                reservation.sent_md5,
            ):
                return self._publish(row, file, int(file["size"]), str(file["md5Checksum"]))
            self._discard(row, file, f"{reservation.sent_size} bytes md5 {reservation.sent_md5} were sent")
            return None

    def open(self, row: LedgerRow, size: int | None) -> DriveCopy:
        self._label(row)
        assert row.claimed_by is not None, "rows reach a destination only through claim()"
        with self.classified(row):
            reservation = self._reserve(row)
            store = SessionStore(self.conn, row.id, reservation.file_id, row.claimed_by)
            upload = DriveUpload(self.api, store, self.metadata(row, reservation.file_id), size)
            uri = reservation.session_uri
            if uri and row.id not in self._released and self.api.uploads.owns_session(uri):
                upload.resume(uri)
            return DriveCopy(self, row, upload)

    # -- what DriveCopy needs

    def metadata(self, row: LedgerRow, file_id: str) -> dict[str, Any]:
        folder = self.folders.path(row.kind, month_of(row))[-1]
        tags = {"falback_ledger_id": str(row.id), "falback_source": source_hash(row)}
        if row.fal_request_id:
            tags["fal_request_id"] = row.fal_request_id[:100]
        return {
            "id": file_id,
            "name": readable_name(row),
            "parents": [folder],
            "mimeType": mime_type(row),
            "appProperties": tags,
        }

    def verified(self, row: LedgerRow, file: dict[str, Any], size: int, md5: str) -> StoredFile:
        """The StoredFile if Drive's copy matches what was streamed; else trash it and fail."""
        if (int(file.get("size") or -1), file.get("md5Checksum")) != (size, md5):
            self._discard(row, file, f"the source has {size} bytes md5 {md5}")
            raise VerifyError(
                f"the Drive copy did not match the source ({file.get('size')} bytes md5"
                f" {file.get('md5Checksum')}; the source has {size} bytes md5 {md5}): moved it to"
                " Drive's trash, the next attempt uploads again"
            )
        log.info("%s: verified in Drive as %s (%d bytes, md5 %s)", self.api.label, file["id"], size, md5)
        return self._publish(row, file, size, md5)

    @contextmanager
    def classified(self, row: LedgerRow) -> Iterator[None]:
        """Drive failures as the job's errors, with advice for the mode in use; a folder
        or a reserved id that turned out unusable is forgotten first."""
        try:
            yield
        except FolderGone as e:
            self.folders.forget(self.folders.path(row.kind, month_of(row)))
            raise TransientError(
                f"the Drive folder {row.kind}/{month_of(row)} is gone; the next attempt makes it again"
            ) from e
        except ReservedIdTaken as e:
            self._release(row, None)
            raise TransientError(f"{e}; the next attempt reserves a new id") from e
        except DriveFailure as e:
            raise copy_error(e, self.settings, self.folders.shared) from e

    # -- helpers

    def _reserve(self, row: LedgerRow) -> db.Reservation:
        reservation = db.reservation(self.conn, row.id)
        if reservation is None:
            db.reserve(self.conn, row.id, self.api.generate_id())
            self.conn.commit()
            reservation = db.reservation(self.conn, row.id)
            assert reservation is not None
        return reservation

    def _search(self, row: LedgerRow) -> dict[str, Any] | None:
        query = (
            f"appProperties has {{ key='falback_source' and value='{quote(source_hash(row))}' }}"
            " and trashed = false"
        )
        found = self.api.list_files(query, "id", drive_id=self.folders.space().drive_id)
        return found[0] if found else None

    def _discard(self, row: LedgerRow, file: dict[str, Any], expected: str) -> None:
        log.warning(
            "%s: Drive copy %s has %s bytes md5 %s but %s: moving it to the trash",
            self.api.label,
            file["id"],
            file.get("size"),
            file.get("md5Checksum"),
            expected,
        )
        self.api.trash_file(str(file["id"]))
        self._release(row, str(file["id"]))

    def _release(self, row: LedgerRow, file_id: str | None) -> None:
        """Forget the row's reservation (and session): the next attempt reserves a new id."""
        reservation = db.reservation(self.conn, row.id)
        if reservation is not None:
            db.release(self.conn, row.id, file_id or reservation.file_id)
        self.conn.commit()
        self._released.add(row.id)

    def _publish(self, row: LedgerRow, file: dict[str, Any], size: int, md5: str) -> StoredFile:
        if row.claimed_by is not None:  # the upload is over: its session is of no more use
            SessionStore(self.conn, row.id, str(file["id"]), row.claimed_by).save_session(None, 0)
        if self.settings.share_anyone:
            try:
                self.api.share_with_anyone(str(file["id"]))
            except DriveFailure as e:
                # The copy is safe either way; a sharing policy must not fail the backup.
                log.warning("%s: could not share %s by link: %s", self.api.label, file["id"], e)
        return StoredFile("drive", str(file["id"]), str(file.get("webViewLink") or ""), size, md5)

    def _label(self, row: LedgerRow) -> None:
        job = get_current_job()
        self.api.label = f"ledger {row.id} job {job.id if job else '-'}"


class DriveCopy:
    """The Upload the job streams into: DriveUpload sends, DriveDestination checks."""

    def __init__(self, dest: DriveDestination, row: LedgerRow, upload: DriveUpload) -> None:
        self.dest, self.row, self.upload = dest, row, upload

    @property
    def offset(self) -> int:
        return self.upload.offset

    @offset.setter
    def offset(self, value: int) -> None:  # the Upload protocol declares a plain attribute
        self.upload.offset = value

    @property
    def file_id(self) -> str:
        return self.upload.file_id

    @property
    def chunk_size(self) -> int:
        return self.upload.chunk_size

    def write(self, chunk: bytes) -> None:
        with self.dest.classified(self.row):
            self.upload.write(chunk)

    def finish(self, size: int, md5: str) -> StoredFile:
        with self.dest.classified(self.row):
            return self.dest.verified(self.row, self.upload.finish(size, md5), size, md5)

    def abandon(self) -> None:
        self.upload.abandon()


def source_hash(row: LedgerRow) -> str:
    return hashlib.sha256(row.source_url.encode()).hexdigest()


def mime_type(row: LedgerRow) -> str:
    return row.content_type or mimetypes.guess_type(readable_name(row))[0] or "application/octet-stream"

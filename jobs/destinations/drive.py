"""Google Drive as the destination (docs/google-drive.md).

One ledger row, one Drive file. Before the first byte goes out the row gets a Drive file
id of its own (files.generateIds, kept in `drive_files`), and every create names that id:
a retried or concurrent create gets 409 ("exists") and turns into a check of the existing
file instead of a second copy. Files carry appProperties (ledger id, source hash, fal
request id), so a copy is found again even if the ledger forgot its reservation.

The upload itself (chunks, resume, errors) is in drive_upload.py. The MD5 of what was
streamed is recorded just before the last bytes go out; the finished file's size and
md5Checksum must match it, or the copy is deleted and the attempt fails.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from typing import Any

from rq import get_current_job

from core.drive_settings import DriveSettings
from db import drive_state as db
from db.connection import Connection
from db.ledger import LedgerRow
from jobs.destinations.base import StoredFile, month_of, readable_name
from jobs.destinations.drive_api import DriveApi, DriveApiError, classified
from jobs.destinations.drive_folders import Folders, quote
from jobs.destinations.drive_upload import DriveUpload
from jobs.errors import TransientError, VerifyError

log = logging.getLogger(__name__)


class DriveDestination:
    name = "drive"

    def __init__(self, settings: DriveSettings, conn: Connection, api: DriveApi | None = None) -> None:
        self.settings = settings
        self.conn = conn
        self.api = api or DriveApi(settings)
        self.folders = Folders(self.api, conn, settings.folder_id)
        self._released: set[int] = set()  # rows whose reservation (and session) were dropped

    # -- the Destination protocol

    def find(self, row: LedgerRow) -> StoredFile | None:
        """The verified copy of `row`, if an earlier attempt made it. A copy that exists but
        was never checked is left to `open`, which checks it against the source."""
        self._label(row)
        with classified(self.settings):
            reservation = db.reservation(self.conn, row.id)
            if reservation is None:
                found = self._search(row)
                if found is None:
                    return None
                # Adopt it: `open` will see 409 on create and check it against the source.
                db.reserve(self.conn, row.id, str(found["id"]))
                self.conn.commit()
                log.info("%s: found an unrecorded copy %s by its appProperties", self.api.label,
                         found["id"])
                return None
            file = self.api.get_file(reservation.file_id)
            if file is None or reservation.sent_md5 is None:
                return None
            if (int(file.get("size") or -1), file.get("md5Checksum")) == (
                    reservation.sent_size, reservation.sent_md5):
                return self._publish(row, file, int(file["size"]), str(file["md5Checksum"]))
            self._discard(row, file, f"{file.get('size')} bytes md5 {file.get('md5Checksum')}",
                          f"{reservation.sent_size} bytes md5 {reservation.sent_md5} were sent")
            return None

    def open(self, row: LedgerRow, size: int | None) -> DriveUpload:
        self._label(row)
        with classified(self.settings):
            reservation = self._reserve(row)
            upload = DriveUpload(self, row, size, reservation.file_id)
            uri = reservation.session_uri
            if uri and row.id not in self._released and self.api.owns_session(uri):
                upload.resume(uri)
            return upload

    # -- used by DriveUpload

    def metadata(self, row: LedgerRow, file_id: str) -> dict[str, Any]:
        folder = self.folders.path(row.kind, month_of(row))[-1]
        tags = {"falback_ledger_id": str(row.id), "falback_source": source_hash(row)}
        if row.fal_request_id:
            tags["fal_request_id"] = row.fal_request_id[:100]
        return {"id": file_id, "name": readable_name(row), "parents": [folder],
                "mimeType": mime_type(row), "appProperties": tags}

    def folders_gone(self, row: LedgerRow) -> TransientError:
        """Drive answered 404 for the target folder: someone deleted it."""
        self.folders.forget(self.folders.path(row.kind, month_of(row)))
        return TransientError(f"the Drive folder {row.kind}/{month_of(row)} is gone; the next"
                              " attempt makes it again")

    def verified(self, row: LedgerRow, file: dict[str, Any] | None, size: int, md5: str) -> StoredFile:
        """The StoredFile if Drive's copy matches what was streamed; else delete it and fail."""
        if file is None:
            raise TransientError("Drive did not return the uploaded file")
        if (int(file.get("size") or -1), file.get("md5Checksum")) != (size, md5):
            self._discard(row, file, f"{file.get('size')} bytes md5 {file.get('md5Checksum')}",
                          f"the source has {size} bytes md5 {md5}")
            raise VerifyError(
                f"the Drive copy did not match the source ({file.get('size')} bytes md5"
                f" {file.get('md5Checksum')}; the source has {size} bytes md5 {md5}): deleted it,"
                " the next attempt uploads again"
            )
        log.info("%s: verified in Drive as %s (%d bytes, md5 %s)", self.api.label, file["id"], size, md5)
        return self._publish(row, file, size, md5)

    def record_sent(self, row: LedgerRow, file_id: str, size: int, md5: str) -> None:
        db.record_sent(self.conn, row.id, file_id, size, md5)
        self.conn.commit()

    # -- helpers

    def save_session(self, row: LedgerRow, session_uri: str | None, offset: int) -> None:
        assert row.claimed_by is not None, "rows reach a destination only through claim()"
        db.save_session(self.conn, row.id, row.claimed_by, session_uri, offset)
        self.conn.commit()

    def _reserve(self, row: LedgerRow) -> db.Reservation:
        reservation = db.reservation(self.conn, row.id)
        if reservation is None:
            db.reserve(self.conn, row.id, self.api.generate_id())
            self.conn.commit()
            reservation = db.reservation(self.conn, row.id)
            assert reservation is not None
        return reservation

    def _search(self, row: LedgerRow) -> dict[str, Any] | None:
        query = (f"appProperties has {{ key='falback_source' and value='{quote(source_hash(row))}' }}"
                 " and trashed = false")
        found = self.api.list_files(query, "id")
        return found[0] if found else None

    def _discard(self, row: LedgerRow, file: dict[str, Any], has: str, expected: str) -> None:
        log.warning("%s: Drive copy %s has %s but %s: deleting it", self.api.label, file["id"], has,
                    expected)
        self.api.delete_file(str(file["id"]))
        db.release(self.conn, row.id, str(file["id"]))
        self.conn.commit()
        self._released.add(row.id)

    def _publish(self, row: LedgerRow, file: dict[str, Any], size: int, md5: str) -> StoredFile:
        if row.claimed_by is not None:  # the upload is over: its session is of no more use
            self.save_session(row, None, 0)
        if self.settings.share_anyone:
            try:
                self.api.share_with_anyone(str(file["id"]))
            except DriveApiError as e:
                # The copy is safe either way; a sharing policy must not fail the backup.
                log.warning("%s: could not share %s by link: %s", self.api.label, file["id"], e)
        return StoredFile("drive", str(file["id"]), str(file.get("webViewLink") or ""), size, md5)

    def _label(self, row: LedgerRow) -> None:
        job = get_current_job()
        self.api.label = f"ledger {row.id} job {job.id if job else '-'}"


def source_hash(row: LedgerRow) -> str:
    return hashlib.sha256(row.source_url.encode()).hexdigest()


def mime_type(row: LedgerRow) -> str:
    return row.content_type or mimetypes.guess_type(readable_name(row))[0] or "application/octet-stream"

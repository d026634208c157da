"""One upload to S3: the whole file in one PutObject when it fits in a part, else a
multipart upload, in constant memory (at most one part is buffered).

A part is sent only once more bytes follow it, so every part but the last is exactly
`part_size` long and a file of one part or less goes out as a single PutObject. Each
body carries a checksum S3 verifies (x-amz-checksum-sha256 / -crc32, or Content-MD5), so
a body damaged on the way is refused rather than stored.

Resuming after a crash: the upload id and part size are kept in `s3_uploads` as soon as
the upload is created. The next attempt lists the parts S3 holds (ListParts) and keeps
the leading run of whole parts; `offset` is their total, and the job sends only what
follows, so no part is sent twice. The whole file's size and MD5 are recorded just before
the last part goes out: they fix that part's length (Supabase's ListParts gives no
sizes) and must match what the next attempt streams.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import sys
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

from botocore.exceptions import ClientError

from core.s3_settings import S3Settings
from db import s3_state as db
from db.connection import Connection
from db.ledger import LedgerRow
from jobs.destinations.base import StoredFile
from jobs.destinations.s3_client import classified, error_code
from jobs.errors import PermanentError, TransientError, VerifyError

log = logging.getLogger(__name__)

MAX_PARTS = 10_000  # S3's limit for one multipart upload
# S3 refuses to assemble these parts; sending them all again is the way out.
_UNASSEMBLABLE = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}


class UploadTarget(Protocol):
    """What an upload needs from the S3 destination (jobs/destinations/s3.py): its
    settings, client and connection, the claim owner, object naming and verification."""

    settings: S3Settings
    s3: Any
    conn: Connection

    def owner(self, row: LedgerRow) -> str: ...

    def head(self, key: str) -> dict[str, Any] | None: ...

    def metadata(self, row: LedgerRow, size: int | None = None, md5: str | None = None) -> dict[str, str]: ...

    def content_type(self, row: LedgerRow) -> str: ...

    def label(self, row: LedgerRow, key: str, size: int, md5: str) -> None: ...

    def verified(self, row: LedgerRow, key: str, size: int, md5: str) -> StoredFile: ...

    def abort(
        self, row: LedgerRow, key: str, upload_id: str, *, bucket: str | None = None, forget: bool = True
    ) -> None: ...


class S3Upload:
    def __init__(
        self,
        destination: UploadTarget,
        row: LedgerRow,
        key: str,
        part_size: int,
        *,
        upload_id: str | None = None,
        parts: Sequence[dict[str, Any]] = (),
        offset: int = 0,
        sent: tuple[int, str] | None = None,
    ) -> None:
        self.destination = destination
        self.settings = destination.settings
        self.s3 = destination.s3
        self.row = row
        self.key = key
        self.part_size = part_size
        self.upload_id = upload_id
        self.parts = list(parts)  # CompleteMultipartUpload's Parts: number, ETag, checksum
        self.offset = offset
        self.sent = sent  # (size, md5) an earlier attempt recorded before its last part
        self.buffer = bytearray()

    # -- the Upload protocol

    @property
    def chunk_size(self) -> int:
        return self.part_size

    def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        while len(self.buffer) > self.part_size:  # more follows: this part is not the last
            part, self.buffer = self.buffer, self.buffer[self.part_size :]
            del part[self.part_size :]
            self._send_part(part)

    def finish(self, size: int, md5: str) -> StoredFile:
        if (self.sent is not None and self.sent != (size, md5)) or size < self.offset:
            self._start_over()
            raise VerifyError(
                f"the source is not what an earlier attempt sent ({self.sent} before,"
                f" {size} bytes md5 {md5} now): the next attempt uploads it anew"
            )
        owner = self.destination.owner(self.row)
        if not db.record_sent(
            self.destination.conn, self.row.id, owner, self.settings.bucket, self.key, size, md5
        ):
            self.destination.conn.commit()
            raise TransientError("lost the claim on this row before the last bytes went out")
        self.destination.conn.commit()
        if self.upload_id is None:
            self._put(size, md5)
        else:
            if self.buffer or not self.parts:
                self._send_part(self.buffer)
            self.buffer = bytearray()
            self._complete(size)
            self.destination.label(self.row, self.key, size, md5)
        stored = self.destination.verified(self.row, self.key, size, md5)
        db.end_upload(self.destination.conn, self.row.id, owner)
        self.destination.conn.commit()
        return stored

    def abandon(self) -> None:
        self.buffer = bytearray()
        # The parts are kept for the next attempt, unless there can be none: a file whose
        # source is gone, or that S3 will never take, should not leave parts to pay for.
        if self.upload_id is not None and isinstance(sys.exc_info()[1], PermanentError):
            self.destination.abort(self.row, self.key, self.upload_id)
            self.upload_id = None

    # -- S3 requests

    def _put(self, size: int, md5: str) -> None:
        with classified(self.settings, f"upload {self.key}"):
            self.s3.put_object(
                Bucket=self.settings.bucket,
                Key=self.key,
                Body=self.buffer,
                ContentType=self.destination.content_type(self.row),
                Metadata=self.destination.metadata(self.row, size, md5),
                **_checksum(self.settings.checksum, self.buffer)[0],
            )
        self.buffer = bytearray()

    def _create(self) -> str:
        checksum = self.settings.checksum
        extra = {"ChecksumAlgorithm": checksum.upper()} if checksum != "md5" else {}
        with classified(self.settings, f"start a multipart upload of {self.key}"):
            upload_id = str(
                self.s3.create_multipart_upload(
                    Bucket=self.settings.bucket,
                    Key=self.key,
                    Metadata=self.destination.metadata(self.row),
                    ContentType=self.destination.content_type(self.row),
                    **extra,
                )["UploadId"]
            )
        conn = self.destination.conn
        if not db.start_upload(
            conn,
            self.row.id,
            self.destination.owner(self.row),
            self.settings.bucket,
            self.key,
            upload_id,
            self.part_size,
        ):
            conn.commit()
            self.destination.abort(self.row, self.key, upload_id, forget=False)
            raise TransientError("lost the claim on this row before the upload started")
        conn.commit()
        log.info(
            "ledger %d: multipart upload of %s started (%d-byte parts)", self.row.id, self.key, self.part_size
        )
        return upload_id

    def _send_part(self, body: bytearray) -> None:
        if self.upload_id is None:
            self.upload_id = self._create()
        number = len(self.parts) + 1
        if number > MAX_PARTS:
            raise PermanentError(
                f"the file needs more than {MAX_PARTS} parts of FALBACK_S3_PART_SIZE"
                f" ({self.part_size} bytes): raise FALBACK_S3_PART_SIZE"
            )
        headers, echo = _checksum(self.settings.checksum, body)
        doing = f"upload part {number} of {self.key}"
        with classified(self.settings, doing):
            try:
                answer = self.s3.upload_part(
                    Bucket=self.settings.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    Body=body,
                    **headers,
                )
            except ClientError as e:
                if error_code(e) == "NoSuchUpload":
                    self._gone(doing)
                raise
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"], **echo})

    def _complete(self, size: int) -> None:
        doing = f"complete the upload of {self.key}"
        with classified(self.settings, doing):
            try:
                self.s3.complete_multipart_upload(
                    Bucket=self.settings.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
            except ClientError as e:
                code = error_code(e)
                head = self.destination.head(self.key) if code == "NoSuchUpload" else None
                if head is not None and int(head["ContentLength"]) == size:
                    return  # an earlier request completed it and its answer was lost
                if code == "NoSuchUpload":
                    self._gone(doing)
                if code in _UNASSEMBLABLE:
                    self._start_over()
                    raise TransientError(
                        f"S3 would not assemble the parts of {self.key} ({code}):"
                        " the next attempt uploads the file again"
                    ) from e
                raise

    def _gone(self, doing: str) -> None:
        """The upload was aborted under us (by hand, or by a lifecycle rule)."""
        self.upload_id = None
        db.end_upload(self.destination.conn, self.row.id, self.destination.owner(self.row))
        self.destination.conn.commit()
        raise TransientError(f"S3 has no such upload any more ({doing}): the next attempt starts again")

    def _start_over(self) -> None:
        if self.upload_id is not None:
            self.destination.abort(self.row, self.key, self.upload_id, forget=False)
            self.upload_id = None
        db.forget(self.destination.conn, self.row.id, self.destination.owner(self.row))
        self.destination.conn.commit()


def resumable_parts(
    listed: Sequence[dict[str, Any]], part_size: int, sent_size: int | None
) -> tuple[list[dict[str, Any]], int] | None:
    """The leading run of parts (as CompleteMultipartUpload wants them) that this upload
    would have sent, and their total length; None if S3 holds a part it would not have
    sent (the upload cannot be resumed). After a gap, parts are sent again."""
    last = math.ceil(sent_size / part_size) if sent_size else None
    run: list[dict[str, Any]] = []
    offset = 0
    for expected, part in enumerate(sorted(listed, key=lambda p: int(p["PartNumber"])), start=1):
        number = int(part["PartNumber"])
        if last is not None and number > last:
            return None
        if number != expected:
            break
        want = part_size if last is None or number < last else int(sent_size or 0) - (last - 1) * part_size
        if part.get("Size") is not None and int(part["Size"]) != want:
            return None
        run.append(
            {
                "PartNumber": number,
                "ETag": part["ETag"],
                **{k: part[k] for k in ("ChecksumSHA256", "ChecksumCRC32") if part.get(k)},
            }
        )
        offset += want
    return run, offset


def _checksum(kind: str, body: bytes | bytearray) -> tuple[dict[str, str], dict[str, str]]:
    """The request argument that makes S3 check `body`, and what CompleteMultipartUpload
    repeats for the part."""
    if kind == "md5":
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        return {"ContentMD5": base64.b64encode(digest).decode()}, {}
    if kind == "crc32":
        value = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
        return {"ChecksumCRC32": value}, {"ChecksumCRC32": value}
    value = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return {"ChecksumSHA256": value}, {"ChecksumSHA256": value}

"""An S3-compatible bucket as the destination: Supabase Storage, R2, B2, AWS S3, MinIO
(docs/s3.md).

One ledger row, one object, at a key that follows from the row alone:
`<prefix><kind>/<YYYY-MM>/<ledger id>-<name>`. A repeat finds the object there (HeadObject)
instead of writing a second one. An object counts as a copy only when it carries the
whole file's MD5 and size in its metadata (`x-amz-meta-md5`, `x-amz-meta-size`), which are
written only once S3 has accepted every byte, each part against a checksum S3 checks.
S3's own ETag is never compared with an MD5: for a multipart object it is not one.

The upload itself (one PutObject, or parts that resume after a crash) is in s3_upload.py;
its state is kept in `s3_uploads` (db/s3_state.py).
"""

from __future__ import annotations

import hashlib
import logging
import math
import mimetypes
import re
from typing import Any

from botocore.exceptions import ClientError

from core.s3_settings import S3Settings
from db import s3_state as db
from db.connection import Connection
from db.ledger import LedgerRow
from jobs.destinations import s3_client
from jobs.destinations.base import StoredFile, month_of, readable_name
from jobs.destinations.s3_client import classified, error_code
from jobs.destinations.s3_upload import MAX_PARTS, S3Upload, resumable_parts
from jobs.errors import PermanentError, VerifyError

log = logging.getLogger(__name__)

_MD5 = re.compile(r"^[0-9a-f]{32}$")
# CopyObject copies at most 5 GiB; a larger object is relabelled part by part.
COPY_LIMIT = 5 * 1024**3
COPY_PART = 512 * 1024**2


class S3Destination:
    name = "s3"

    def __init__(self, settings: S3Settings, conn: Connection, s3: Any | None = None) -> None:
        self.settings = settings
        self.conn = conn
        self.s3 = s3 if s3 is not None else s3_client.client(settings)
        self.bucket = settings.bucket

    def key_for(self, row: LedgerRow) -> str:
        return f"{self.settings.prefix}{row.kind}/{month_of(row)}/{readable_name(row)}"

    # -- the Destination protocol

    def find(self, row: LedgerRow) -> StoredFile | None:
        """The verified object of `row`, if an earlier attempt made it. An object at the key
        that is not (wrong size, no MD5, not what was sent) is deleted: the upload replaces it."""
        key = self.key_for(row)
        head = self.head(key)
        if head is None:
            return None
        size, meta = int(head["ContentLength"]), head.get("Metadata") or {}
        md5 = meta.get("md5")
        state = db.upload(self.conn, row.id)
        self.conn.commit()  # no transaction held open while S3 answers
        sent = state if state and (state.bucket, state.key) == (self.bucket, key) and state.sent_md5 else None
        if md5 is None and sent is not None and sent.sent_size == size and sent.sent_md5:
            # S3 completed the upload; the worker died before writing the metadata.
            log.info("ledger %d: %s is complete but unlabelled; labelling it", row.id, key)
            self.label(row, key, size, sent.sent_md5)
            stored = self.verified(row, key, size, sent.sent_md5)
            db.end_upload(self.conn, row.id, self.owner(row))
            self.conn.commit()
            return stored
        expected = (sent.sent_size, sent.sent_md5) if sent else (size, md5)
        if md5 and _MD5.match(md5) and meta.get("size") == str(size) and (size, md5) == expected:
            return self.stored(key, size, md5)
        self.discard(
            row,
            key,
            f"{size} bytes, metadata md5 {md5} size {meta.get('size')}",
            f"{sent.sent_size} bytes md5 {sent.sent_md5} were sent"
            if sent
            else "an object falback completed carries its md5 and size",
        )
        return None

    def open(self, row: LedgerRow, size: int | None) -> S3Upload:
        key = self.key_for(row)
        if size is not None and size > self.settings.part_size * MAX_PARTS:
            raise PermanentError(
                f"{size} bytes is more than {MAX_PARTS} parts of FALBACK_S3_PART_SIZE"
                f" ({self.settings.part_size} bytes): raise FALBACK_S3_PART_SIZE"
            )
        state = db.upload(self.conn, row.id)
        self.conn.commit()
        if state is not None and state.upload_id and state.part_size:
            if (state.bucket, state.key) == (self.bucket, key):
                resumed = self._resume(row, state, state.upload_id, state.part_size)
                if resumed is not None:
                    return resumed
            else:  # the bucket or prefix changed since: that upload can never complete
                self.abort(row, state.key, state.upload_id, bucket=state.bucket)
        return S3Upload(self, row, key, self.settings.part_size)

    def presigned_url(self, key: str, seconds: int | None = None) -> str:
        """A GET URL for the object that works without credentials for `seconds`."""
        with classified(self.settings, f"sign a URL for {key}"):
            return str(
                self.s3.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=seconds or self.settings.presign_seconds,
                )
            )

    # -- used by S3Upload

    def owner(self, row: LedgerRow) -> str:
        assert row.claimed_by is not None, "rows reach a destination only through claim()"
        return row.claimed_by

    def head(self, key: str) -> dict[str, Any] | None:
        """HeadObject, or None when there is no such object."""
        with classified(self.settings, f"look up {key}"):
            try:
                return dict(self.s3.head_object(Bucket=self.bucket, Key=key))
            except ClientError as e:
                if s3_client.status_of(e) == 404:
                    return None
                if error_code(e) in ("403", "400"):
                    self._explain(key)  # HEAD answers have no body: ask again to learn why
                raise

    def metadata(self, row: LedgerRow, size: int | None = None, md5: str | None = None) -> dict[str, str]:
        tags = {"ledger-id": str(row.id), "source": hashlib.sha256(row.source_url.encode()).hexdigest()}
        if size is not None and md5 is not None:
            tags.update(md5=md5, size=str(size))
        return tags

    def content_type(self, row: LedgerRow) -> str:
        return row.content_type or mimetypes.guess_type(readable_name(row))[0] or "application/octet-stream"

    def label(self, row: LedgerRow, key: str, size: int, md5: str) -> None:
        """Write the whole file's MD5 and size into a multipart object's metadata (known only
        once every part is in): a copy onto itself that replaces the metadata."""
        doing = f"write the md5 of {key} into its metadata"
        extra = {
            "MetadataDirective": "REPLACE",
            "Metadata": self.metadata(row, size, md5),
            "ContentType": self.content_type(row),
        }
        source = {"Bucket": self.bucket, "Key": key}
        with classified(self.settings, doing):
            if size <= COPY_LIMIT:
                self.s3.copy_object(Bucket=self.bucket, Key=key, CopySource=source, **extra)
                return
            extra.pop("MetadataDirective")
            upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
            try:
                parts = []
                for n in range(1, math.ceil(size / COPY_PART) + 1):
                    start, end = (n - 1) * COPY_PART, min(n * COPY_PART, size) - 1
                    copied = self.s3.upload_part_copy(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=n,
                        CopySource=source,
                        CopySourceRange=f"bytes={start}-{end}",
                    )
                    parts.append({"PartNumber": n, "ETag": copied["CopyPartResult"]["ETag"]})
                self.s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                self.abort(row, key, upload_id, forget=False)
                raise

    def verified(self, row: LedgerRow, key: str, size: int, md5: str) -> StoredFile:
        """The StoredFile if the object has the streamed size and MD5; else delete it and fail."""
        head = self.head(key)
        if head is None:
            raise VerifyError(f"S3 has no object at {key} after the upload; the next attempt uploads again")
        has_size, has_md5 = int(head["ContentLength"]), (head.get("Metadata") or {}).get("md5")
        if (has_size, has_md5) != (size, md5):
            self.discard(
                row, key, f"{has_size} bytes md5 {has_md5}", f"the source has {size} bytes md5 {md5}"
            )
            raise VerifyError(
                f"the S3 object did not match the source ({has_size} bytes md5 {has_md5};"
                f" the source has {size} bytes md5 {md5}): deleted it, the next attempt"
                " uploads again"
            )
        log.info("ledger %d: verified in S3 as %s (%d bytes, md5 %s)", row.id, key, size, md5)
        return self.stored(key, size, md5)

    def stored(self, key: str, size: int, md5: str) -> StoredFile:
        return StoredFile("s3", key, f"s3://{self.bucket}/{key}", size, md5)

    def discard(self, row: LedgerRow, key: str, has: str, expected: str) -> None:
        log.warning("ledger %d: S3 object %s has %s but %s: deleting it", row.id, key, has, expected)
        with classified(self.settings, f"delete {key}"):
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        db.forget(self.conn, row.id, self.owner(row))
        self.conn.commit()

    def abort(
        self, row: LedgerRow, key: str, upload_id: str, *, bucket: str | None = None, forget: bool = True
    ) -> None:
        """Abort an upload that cannot be completed (best effort: a bucket lifecycle rule
        removes what is left, docs/s3.md), and forget it."""
        doing = f"abort the upload of {key}"
        try:
            self.s3.abort_multipart_upload(Bucket=bucket or self.bucket, Key=key, UploadId=upload_id)
        except ClientError as e:
            if error_code(e) != "NoSuchUpload":  # already gone is what we wanted
                log.warning(
                    "ledger %d: could not %s: %s",
                    row.id,
                    doing,
                    s3_client.copy_error(e, self.settings, doing),
                )
        except Exception as e:
            log.warning("ledger %d: could not %s: %s", row.id, doing, type(e).__name__)
        if forget:
            db.end_upload(self.conn, row.id, self.owner(row))
            self.conn.commit()

    # -- helpers

    def _resume(self, row: LedgerRow, state: db.S3Upload, upload_id: str, part_size: int) -> S3Upload | None:
        """The upload continued where S3's parts end, or None if it cannot be (and is aborted)."""
        listed = self._list_parts(state.key, upload_id)
        if listed is None:
            log.info("ledger %d: the upload of %s is gone; starting again", row.id, state.key)
            db.end_upload(self.conn, row.id, self.owner(row))
            self.conn.commit()
            return None
        sent = (state.sent_size, state.sent_md5) if state.sent_size is not None and state.sent_md5 else None
        resumable = resumable_parts(listed, part_size, sent[0] if sent else None)
        if resumable is None:
            log.warning(
                "ledger %d: the parts S3 holds for %s do not fit %d-byte parts; aborting"
                " that upload and starting again",
                row.id,
                state.key,
                part_size,
            )
            self.abort(row, state.key, upload_id)
            return None
        parts, offset = resumable
        log.info(
            "ledger %d: resuming the upload of %s after %d parts (%d bytes)",
            row.id,
            state.key,
            len(parts),
            offset,
        )
        return S3Upload(
            self, row, state.key, part_size, upload_id=upload_id, parts=parts, offset=offset, sent=sent
        )

    def _list_parts(self, key: str, upload_id: str) -> list[dict[str, Any]] | None:
        parts: list[dict[str, Any]] = []
        marker = 0
        with classified(self.settings, f"list the parts of {key}"):
            while True:
                try:
                    page = self.s3.list_parts(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                    )
                except ClientError as e:
                    if error_code(e) == "NoSuchUpload":
                        return None
                    raise
                parts += page.get("Parts") or []
                marker = int(page.get("NextPartNumberMarker") or 0)
                if not page.get("IsTruncated") or not marker:
                    return parts

    def _explain(self, key: str) -> None:
        """Raise the error a request with a body gives (HEAD has none to say why)."""
        self.s3.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        raise PermanentError(
            f"S3 says the access key may list bucket {self.bucket} but not read {key}:"
            " give it s3:GetObject (and s3:PutObject, s3:DeleteObject) on the bucket"
        )

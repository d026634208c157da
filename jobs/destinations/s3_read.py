"""Reading copies back from an S3-compatible bucket.

HeadObject gives existence and size. The content check streams the object and hashes it
(constant memory): the checksums S3 keeps are those falback sent per request
(FALBACK_S3_CHECKSUM: SHA-256 or CRC32 per part, so a multipart object's is a checksum of
checksums, or Content-MD5, which S3 does not keep), none of which is the whole file's MD5
that `copies` holds, and the `md5` metadata is only what falback wrote, not what S3 holds.
"""

from __future__ import annotations

from collections.abc import Iterator

from botocore.exceptions import ClientError

from db.copies import Copy
from jobs.destinations.readback import CHUNK, Found, measure
from jobs.destinations.s3 import S3Destination
from jobs.destinations.s3_client import classified, status_of
from jobs.errors import PermanentError


class S3Reader:
    name = "s3"

    def __init__(self, destination: S3Destination) -> None:
        self.destination = destination

    def check(self) -> None:
        """The bucket exists. A key allowed only object calls (403 here) proves nothing
        either way, and is let through."""
        dest = self.destination
        with classified(dest.settings, f"look up the bucket {dest.bucket}"):
            try:
                dest.s3.head_bucket(Bucket=dest.bucket)
            except ClientError as e:
                if status_of(e) == 404:
                    raise PermanentError(f"S3 has no bucket {dest.bucket} (FALBACK_S3_BUCKET)") from e
                if status_of(e) != 403:
                    raise

    def inspect(self, copy: Copy) -> Found | None:
        bucket = copy.url.removeprefix("s3://").split("/", 1)[0]
        if copy.url.startswith("s3://") and bucket != self.destination.bucket:
            raise ValueError(
                f"the copy is in bucket {bucket}, falback is configured for {self.destination.bucket}"
            )
        head = self.destination.head(copy.location)
        if head is None:
            return None
        size = int(head["ContentLength"])
        if size != copy.size_bytes:
            return Found(size, None)
        return measure(self.read(copy))

    def read(self, copy: Copy) -> Iterator[bytes]:
        dest = self.destination
        with classified(dest.settings, f"read {copy.location}"):
            body = dest.s3.get_object(Bucket=dest.bucket, Key=copy.location)["Body"]
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

    def remove(self, copy: Copy) -> None:
        dest = self.destination
        with classified(dest.settings, f"delete {copy.location}"):
            dest.s3.delete_object(Bucket=dest.bucket, Key=copy.location)

    def close(self) -> None:
        pass  # the client is shared by the process (s3_client.client)

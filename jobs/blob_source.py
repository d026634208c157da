"""Files fal returned inline (data: URIs, sync mode) are kept in Postgres (webhook_blobs)
and copied from there: their ledger source_url is ``blob:sha256:<hex>``, never fetched
over HTTP. Read in slices, so a copy stays constant-memory like an HTTP source."""

from __future__ import annotations

import re
from collections.abc import Iterator

from core.config import Config
from db import blobs
from db.connection import connect
from jobs.errors import PermanentError

BLOB_PREFIX = "blob:sha256:"
_BLOB_URL = re.compile(r"blob:sha256:([0-9a-f]{64})")


def blob_url(sha256_hex: str) -> str:
    return BLOB_PREFIX + sha256_hex


def is_blob_url(url: str) -> bool:
    return url.startswith(BLOB_PREFIX)


class BlobStream:
    """Same surface as jobs.fetch.SourceStream: `total` and `chunks()`."""

    def __init__(self, config: Config, url: str) -> None:
        match = _BLOB_URL.fullmatch(url)
        if not match or not config.database_url:
            raise PermanentError(f"not a stored blob: {url[:80]!r}")
        self.config = config
        self.sha256 = match.group(1)
        self.total = self._size()

    def _size(self) -> int:
        assert self.config.database_url
        conn = connect(self.config.database_url, application_name="falback-worker")
        try:
            size = blobs.blob_size(conn, self.sha256)
        finally:
            conn.close()
        if size is None:
            raise PermanentError(f"stored blob {self.sha256[:12]}... is missing from webhook_blobs")
        return size

    def chunks(self) -> Iterator[bytes]:
        assert self.config.database_url
        step = self.config.fetch_chunk_size
        conn = connect(self.config.database_url, application_name="falback-worker")
        try:
            for start in range(0, self.total, step):
                part = blobs.blob_slice(conn, self.sha256, start, step)
                conn.rollback()  # end the read-only transaction; don't hold it over the upload
                if not part:
                    raise PermanentError(f"stored blob {self.sha256[:12]}... ended early")
                yield part
        finally:
            conn.close()

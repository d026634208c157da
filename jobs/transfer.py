"""Stream one file from its source to a destination, hashing as it goes.

The source is read (and hashed) in a thread up to one upload chunk ahead of the upload
(jobs/read_ahead.py): while chunk n goes out, chunk n+1 comes in. Memory stays at about
two chunks: the one read ahead and the one in the destination's buffer.
"""

from __future__ import annotations

import hashlib
import logging

from db.ledger import LedgerRow
from jobs.address_guard import split_url
from jobs.blob_source import BlobStream, is_blob_url
from jobs.destinations.base import Destination, StoredFile
from jobs.fetch import SourceFetcher, SourceStream
from jobs.read_ahead import ReadAhead

log = logging.getLogger(__name__)


def copy_file(row: LedgerRow, fetcher: SourceFetcher, destination: Destination) -> StoredFile:
    """Copy `row`'s source to `destination` in constant memory and return the verified copy.

    A copy an earlier attempt completed is found and returned, never made twice. When the
    destination already holds the first `offset` bytes (a resumed upload), the source is
    still read from byte 0 so the MD5 covers the whole file, but those bytes are not sent
    again.

    A source URL that is malformed or not fetchable at all is a PermanentError before
    anything else looks at it (destinations derive file names from it). The source's
    errors reach the caller as the source raised them, from its thread; whatever ends
    the copy stops that thread first.
    """
    if not is_blob_url(row.source_url):
        split_url(row.source_url)
    existing = destination.find(row)
    if existing is not None:
        log.info("ledger %d: already at %s as %s", row.id, destination.name, existing.id)
        return existing
    # A data: URI a webhook delivered lives in Postgres (jobs/blob_source.py), not on a CDN.
    stream: SourceStream | BlobStream = (
        BlobStream(fetcher.config, row.source_url)
        if is_blob_url(row.source_url)
        else fetcher.open(row.source_url)
    )
    upload = destination.open(row, stream.total)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with ReadAhead(
            stream.chunks(),
            limit=upload.chunk_size,
            tap=digest.update,
            interrupt=stream.abort if isinstance(stream, SourceStream) else None,
            name=f"source-ledger-{row.id}",
        ) as chunks:
            for chunk in chunks:
                end = size + len(chunk)
                if end > upload.offset:
                    upload.write(chunk[max(upload.offset - size, 0) :])
                size = end
        # The reader has ended (joined on leaving the block): the digest is complete.
        return upload.finish(size, digest.hexdigest())
    except BaseException:
        upload.abandon()
        raise

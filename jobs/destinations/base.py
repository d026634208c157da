"""What a destination (local folder, Google Drive) must offer the backup job."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import unquote, urlsplit

from db.ledger import LedgerRow


@dataclass(frozen=True)
class StoredFile:
    destination: str  # "local" or "drive"
    id: str
    url: str
    size: int
    md5: str


class Upload(Protocol):
    # Bytes the destination already holds from an earlier attempt; the job skips them.
    offset: int

    @property
    def chunk_size(self) -> int:
        """Bytes it sends at a time: the copy reads this far ahead of it (jobs/transfer.py)."""
        ...

    def write(self, chunk: bytes) -> None: ...

    def finish(self, size: int, md5: str) -> StoredFile:
        """Complete the upload and check the stored copy's size and MD5 against what
        was streamed; raise VerifyError (and remove the bad copy) on a mismatch."""
        ...

    def abandon(self) -> None:
        """The attempt failed: drop what cannot be resumed, keep what can."""
        ...


class Destination(Protocol):
    name: str

    def find(self, row: LedgerRow) -> StoredFile | None:
        """The complete copy of this row, if an earlier attempt already made it."""
        ...

    def open(self, row: LedgerRow, size: int | None) -> Upload: ...


def readable_name(row: LedgerRow) -> str:
    """`<ledger id>-<original file name>`, safe on every file system."""
    name = row.file_name or unquote(urlsplit(row.source_url).path.rsplit("/", 1)[-1]) or "file"
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "file"
    return f"{row.id}-{name[:150]}"


def month_of(row: LedgerRow) -> str:
    created = row.source_created_at or datetime.now(UTC)
    return created.strftime("%Y-%m")

"""Reading copies back from a destination, for `falback verify` and `falback restore`.

Each destination answers three things about a copy it holds (a `copies` row): what it
holds at the copy's location (`inspect`: size and MD5, or None when nothing is there),
its bytes (`read`: streamed in chunks, never whole in memory), and `remove`, for a copy
found bad, so that the backup job's own `find()` does not take it again. Reading never
changes a good copy.

`check` comes first: a destination that is not the one the copies went to (a folder not
mounted, another bucket, a Drive folder this account cannot see) would make every copy
look missing, and re-copying them all would be the wrong answer to a configuration error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.config import Config
from core.logs import redact
from db.connection import Connection
from db.copies import Copy

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Found:
    """What the destination holds at a copy's location."""

    size: int
    md5: str | None  # None: not computed (the size already differs)


class CopyReader(Protocol):
    name: str

    def check(self) -> None:
        """Raise (with a readable message) unless the destination is there to be read."""
        ...

    def inspect(self, copy: Copy) -> Found | None:
        """Size and MD5 of what is at the copy's location, or None if nothing (or only a
        trashed file) is there."""
        ...

    def read(self, copy: Copy) -> Iterator[bytes]:
        """The copy's bytes in chunks; the underlying response is closed when the
        iterator ends or is closed."""
        ...

    def remove(self, copy: Copy) -> None:
        """Delete (Drive: trash) a bad copy, and whatever lets the backup job accept it."""
        ...

    def close(self) -> None: ...


def reader(config: Config, conn: Connection, name: str) -> CopyReader:
    """The reader for destination `name`; ValueError when it is not configured."""
    from jobs.destinations import named

    destination = named(config, conn, name)
    if name == "drive":
        from jobs.destinations.drive import DriveDestination
        from jobs.destinations.drive_read import DriveReader

        assert isinstance(destination, DriveDestination)
        return DriveReader(destination)
    if name == "s3":
        from jobs.destinations.s3 import S3Destination
        from jobs.destinations.s3_read import S3Reader

        assert isinstance(destination, S3Destination)
        return S3Reader(destination)
    return LocalReader(config.backup_dir)


def usable_readers(
    config: Config,
    conn: Connection,
    names: Sequence[str],
    *,
    asked: bool,
    unconfigured: dict[str, str],
    unreachable: dict[str, str],
) -> dict[str, CopyReader]:
    """The readers of these destinations that pass their check, in order; the others
    are noted with the reason. A ValueError for one that is not configured when it was
    `asked` for by name."""
    readers: dict[str, CopyReader] = {}
    for name in names:
        try:
            r = reader(config, conn, name)
        except ValueError as e:
            if asked:
                raise
            unconfigured[name] = str(e)
            continue
        try:
            r.check()
        except Exception as e:
            unreachable[name] = redact(str(e) or type(e).__name__)
            log.warning("%s: copies not read: %s", name, unreachable[name])
            r.close()
            continue
        readers[name] = r
    return readers


def measure(chunks: Iterable[bytes]) -> Found:
    """Size and MD5 of a stream, in constant memory."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return Found(size, digest.hexdigest())


class LocalReader:
    """The local folder: a copy's location is its path under FALBACK_BACKUP_DIR."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def check(self) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(f"the backup folder {self.root} does not exist (not mounted?)")

    def path(self, copy: Copy) -> Path:
        path = (self.root / copy.location).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"ledger {copy.ledger_id}: local copy {copy.location!r} is outside the folder")
        return path

    def inspect(self, copy: Copy) -> Found | None:
        path = self.path(copy)
        if not path.is_file():
            return None
        size = path.stat().st_size
        if size != copy.size_bytes:
            return Found(size, None)
        return measure(self.read(copy))

    def read(self, copy: Copy) -> Iterator[bytes]:
        with self.path(copy).open("rb") as f:
            while block := f.read(CHUNK):
                yield block

    def remove(self, copy: Copy) -> None:
        self.path(copy).unlink(missing_ok=True)

    def close(self) -> None:
        pass

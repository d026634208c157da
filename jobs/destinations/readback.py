"""Reading copies back from a destination, for `falback verify` and `falback restore`.

Each destination answers three things about a copy it holds (a `copies` row): what it
holds at the copy's location (`inspect`: size and MD5, or None when nothing is there),
its bytes (`read`: streamed in chunks, never whole in memory), and `remove`, for a copy
found bad, so that the backup job's own `find()` does not take it again. Reading never
changes a good copy. Which reader serves a destination: readers.py.

`check` comes first: a destination that is not the one the copies went to (a folder not
mounted, another bucket, a Drive folder this account cannot see) would make every copy
look missing, and re-copying them all would be the wrong answer to a configuration error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from db.copies import Copy

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

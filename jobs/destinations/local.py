"""A local folder as the destination: the embedded default when Drive is not configured.

Layout: `<backup_dir>/<kind>/<YYYY-MM>/<ledger id>-<name>`. A file is written under a
temporary name and renamed into place only once it is durable (fsync) and what landed
on disk has been checked against what was streamed from the source; so a file at its
final path is always whole.

The check: each piece is read back from the file right after it is written and compared
byte for byte with the piece the source sent, and the finished file's size must be the
streamed size. The file then holds exactly the bytes whose MD5 was computed while
streaming (jobs/transfer.py), so that MD5 is the MD5 of what landed, without hashing the
file a second time (a second MD5 pass cost as much CPU as the whole rest of a local copy).
The read-back sees the same page cache a read after the fsync would.

A full disk (or quota) pauses the folder for FALBACK_DISK_FULL_PAUSE seconds, as Drive's daily cap pauses
Drive: every file waits without spending an attempt, instead of each one burning its
attempts and ending 'failed' while the operator makes room.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from db.ledger import LedgerRow
from jobs.destinations.base import StoredFile, month_of, readable_name
from jobs.errors import DestinationPaused, VerifyError

_READ_SIZE = 1024 * 1024
_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _pause_when_full(root: Path, pause: timedelta) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        if e.errno not in _FULL:
            raise
        raise DestinationPaused(
            f"the local folder {root} is full ({e.strerror}); uploads paused",
            datetime.now(UTC) + pause,
        ) from e


class LocalFolder:
    name = "local"

    def __init__(self, root: Path, full_pause: timedelta = timedelta(minutes=5)) -> None:
        self.root = root.resolve()
        self.full_pause = full_pause

    def path_for(self, row: LedgerRow) -> Path:
        return self.root / row.kind / month_of(row) / readable_name(row)

    def find(self, row: LedgerRow) -> StoredFile | None:
        path = self.path_for(row)
        if not path.is_file():
            return None
        size, md5 = _measure(path)
        return self._stored(path, size, md5)

    def open(self, row: LedgerRow, size: int | None) -> LocalUpload:
        path = self.path_for(row)
        with _pause_when_full(self.root, self.full_pause):
            path.parent.mkdir(parents=True, exist_ok=True)
            return LocalUpload(self, path)

    def _stored(self, path: Path, size: int, md5: str) -> StoredFile:
        return StoredFile("local", str(path.relative_to(self.root)), path.as_uri(), size, md5)


class LocalUpload:
    offset = 0
    # A local write seldom waits; this much read ahead covers a slow disk's moments.
    chunk_size = 8 * 1024 * 1024

    def __init__(self, folder: LocalFolder, path: Path) -> None:
        self.folder = folder
        self.path = path
        self.temp = path.with_name(f".{path.name}.{os.getpid()}.part")
        # Unbuffered, read and write: each piece goes to the file as it comes (no copy
        # into a write buffer) and is read back through the same descriptor.
        self.file = open(self.temp, "w+b", buffering=0)  # noqa: SIM115 - closed in finish/abandon
        self.written = 0  # bytes written and read back so far

    def write(self, chunk: bytes) -> None:
        with _pause_when_full(self.folder.root, self.folder.full_pause):
            fd, start = self.file.fileno(), self.written
            view = memoryview(chunk)
            while view:
                view = view[os.pwrite(fd, view, start + len(chunk) - len(view)) :]
            landed = os.pread(fd, len(chunk), start)
        if landed != chunk:
            raise VerifyError(
                f"the local copy does not hold what the source sent: bytes {start} to"
                f" {start + len(chunk) - 1} read back differently from {self.temp}"
            )
        self.written += len(chunk)

    def finish(self, size: int, md5: str) -> StoredFile:
        with _pause_when_full(self.folder.root, self.folder.full_pause):
            return self._finish(size, md5)

    def _finish(self, size: int, md5: str) -> StoredFile:
        os.fsync(self.file.fileno())
        on_disk = os.fstat(self.file.fileno()).st_size
        self.file.close()
        if (on_disk, self.written) != (size, size):
            self.temp.unlink(missing_ok=True)
            raise VerifyError(
                f"local copy does not match the source: {on_disk} bytes on disk and {self.written}"
                f" written and read back, expected {size} bytes md5 {md5}"
            )
        os.replace(self.temp, self.path)
        _sync_folder(self.path.parent)  # the rename itself survives a power loss
        return self.folder._stored(self.path, size, md5)

    def abandon(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        self.temp.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _measure(path: Path) -> tuple[int, str]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as f:
        while block := f.read(_READ_SIZE):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()

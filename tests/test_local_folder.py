"""The local folder's own checks: what lands on disk is read back against what was sent,
the finished file's size must be the streamed size, and only a checked file is renamed
into place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from db.ledger import LedgerRow
from jobs.destinations.local import LocalFolder
from jobs.errors import VerifyError

MiB = 1024 * 1024


def _row(n: int) -> LedgerRow:
    return LedgerRow(
        id=n,
        source_url=f"https://v3.fal.media/files/b/t/video-{n}.mp4",
        kind="regular",
        status="copying",
        attempts=1,
        source_table=None,
        source_id=None,
        variant=None,
        fal_request_id=None,
        file_name=None,
        content_type=None,
        expected_size=None,
        source_created_at=None,
    )


def _pieces(total: int, piece: int = 256 * 1024) -> list[bytes]:
    data = os.urandom(total)
    return [data[i : i + piece] for i in range(0, total, piece)]


def test_a_copy_lands_whole_with_the_streamed_md5(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    pieces = _pieces(3 * MiB + 17)
    upload = folder.open(_row(1), None)
    for piece in pieces:
        upload.write(piece)
    md5 = hashlib.md5(b"".join(pieces), usedforsecurity=False).hexdigest()
    stored = upload.finish(sum(map(len, pieces)), md5)
    path = folder.path_for(_row(1))
    assert path.read_bytes() == b"".join(pieces)
    assert (stored.size, stored.md5) == (3 * MiB + 17, md5)
    assert folder.find(_row(1)) == stored  # found again by reading the file: the same MD5
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_file_cut_short_on_disk_is_not_renamed_into_place(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    pieces = _pieces(2 * MiB)
    upload = folder.open(_row(2), None)
    for piece in pieces:
        upload.write(piece)
    os.truncate(upload.temp, MiB)  # what a failing disk or another process could do
    with pytest.raises(VerifyError, match="does not match the source"):
        upload.finish(2 * MiB, hashlib.md5(b"".join(pieces), usedforsecurity=False).hexdigest())
    assert not folder.path_for(_row(2)).exists()
    assert list(folder.path_for(_row(2)).parent.iterdir()) == []


def test_a_copy_that_sent_less_than_the_source_has_is_refused(tmp_path: Path) -> None:
    folder = LocalFolder(tmp_path)
    upload = folder.open(_row(3), None)
    upload.write(b"x" * 1000)
    with pytest.raises(VerifyError):
        upload.finish(2000, "0" * 32)
    assert list(folder.path_for(_row(3)).parent.iterdir()) == []


def test_the_file_and_then_its_folder_are_fsynced_before_the_copy_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename lives in the folder's own entry: without an fsync of the folder a power
    loss could undo it while the ledger says done."""
    synced: list[str] = []
    fsync = os.fsync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded)
    folder = LocalFolder(tmp_path)
    upload = folder.open(_row(2), None)
    upload.write(b"x" * 1000)
    upload.finish(1000, hashlib.md5(b"x" * 1000, usedforsecurity=False).hexdigest())
    path = folder.path_for(_row(2))
    assert synced[-1] == str(path.parent)  # the folder, after the rename
    assert Path(synced[-2]).parent == path.parent and synced[-2] != str(
        path
    )  # the file, under its temporary name

"""`falback restore DIR`: read the recorded copies back into a folder, `DIR/<kind>/<name>`
(the name the copy has at its destination, `<ledger id>-<file name>`).

Each file is streamed in chunks to a temporary name, hashed on the way, and renamed into
place only when its MD5 matches the one recorded when the copy was made; a mismatch is
reported and the bytes removed. A file already in DIR with the recorded size and MD5 is
skipped, so a run that stopped half way is simply run again. When a file has copies at
several destinations, the first one that reads back whole wins (verified copies first).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from itertools import groupby
from pathlib import Path

from core.config import Config
from core.logs import redact
from db import recovery
from db.connection import Connection
from db.recovery import FileCopy
from jobs.destinations.base import readable_name
from jobs.destinations.readback import CHUNK, CopyReader
from jobs.destinations.readers import usable_readers

log = logging.getLogger(__name__)

# The order copies are tried in when none was verified more recently: the cheapest first.
PREFERENCE = ("local", "s3", "drive")


@dataclass
class RestoreReport:
    files: int = 0  # selected
    restored: int = 0
    skipped: int = 0  # already in DIR, whole
    unrestored: int = 0  # no copy read back whole
    bytes: int = 0  # written in this run
    failures: list[str] = field(default_factory=list)  # one line per bad copy or unread file
    # Destinations holding copies: not configured, or not answering (name -> why). Files
    # copied only there are not selected.
    unconfigured: dict[str, str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.failures and not self.unreachable


# (files done, files in all, bytes of the file just done)
Progress = Callable[[int, int, int], None]


def restore(
    config: Config,
    conn: Connection,
    target: Path,
    *,
    kinds: Sequence[str] | None = None,
    since: date | None = None,
    ids: Sequence[int] | None = None,
    destination: str | None = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """Restore the selected files into `target`. A ValueError when the `destination`
    asked for is not configured."""
    report = RestoreReport()
    holding = recovery.destinations_holding(conn)
    conn.commit()
    names = [destination] if destination else [n for n in PREFERENCE if n in holding]
    readers = usable_readers(
        config,
        conn,
        names,
        asked=destination is not None,
        unconfigured=report.unconfigured,
        unreachable=report.unreachable,
    )
    try:
        found = recovery.copies_to_restore(
            conn, kinds=kinds, since=since, ids=ids, destinations=list(readers)
        )
        conn.commit()
        files = [list(g) for _, g in groupby(found, key=lambda c: c.copy.ledger_id)]
        report.files = len(files)
        for missing in sorted(set(ids or ()) - {c.copy.ledger_id for c in found}):
            report.unrestored += 1
            report.failures.append(f"ledger {missing}: no copy to restore it from")
        for n, choices in enumerate(files, 1):
            written = _restore_one(readers, choices, target, report)
            if progress:
                progress(n, len(files), written)
    finally:
        conn.rollback()
        for r in readers.values():
            r.close()
    return report


def _restore_one(
    readers: dict[str, CopyReader], choices: Sequence[FileCopy], target: Path, report: RestoreReport
) -> int:
    """Restore one file from the first of its copies that reads back whole; bytes written."""
    first = choices[0]
    path = target / first.row.kind / readable_name(first.row)
    if path.is_file() and _matches(path, first.copy.size_bytes, first.copy.md5):
        report.skipped += 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    for item in choices:
        copy = item.copy
        temp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            size, md5 = _download(readers[copy.destination], item, temp)
        except Exception as e:
            temp.unlink(missing_ok=True)
            report.failures.append(
                f"ledger {copy.ledger_id}: could not read the {copy.destination} copy:"
                f" {redact(str(e) or type(e).__name__)}"
            )
            continue
        if (size, md5) != (copy.size_bytes, copy.md5):
            temp.unlink(missing_ok=True)
            report.failures.append(
                f"ledger {copy.ledger_id}: the {copy.destination} copy read back as {size} bytes"
                f" md5 {md5}, expected {copy.size_bytes} bytes md5 {copy.md5}: not restored from it"
                " (`falback verify` re-queues it)"
            )
            continue
        os.replace(temp, path)
        report.restored += 1
        report.bytes += size
        log.info("ledger %d: restored from %s to %s", copy.ledger_id, copy.destination, path)
        return size
    report.unrestored += 1
    return 0


def _download(reader_: CopyReader, item: FileCopy, temp: Path) -> tuple[int, str]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with temp.open("wb") as f:
        for chunk in reader_.read(item.copy):
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    return size, digest.hexdigest()


def _matches(path: Path, size: int, md5: str) -> bool:
    if path.stat().st_size != size:
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest() == md5

"""The reader of each destination (readback.py), built from the configuration, and
checked before any copy is read."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from core.config import Config
from core.logs import redact
from db.connection import Connection
from jobs.destinations import named
from jobs.destinations.readback import CopyReader, LocalReader

log = logging.getLogger(__name__)


def reader(config: Config, conn: Connection, name: str) -> CopyReader:
    """The reader for destination `name`; ValueError when it is not configured."""
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

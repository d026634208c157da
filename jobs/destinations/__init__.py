"""Destinations: where copies go. Every one FALBACK_DESTINATIONS lists (the job makes a
copy at each, jobs/every_destination.py); unset, Google Drive when configured, else an
S3-compatible bucket when configured, else a local folder."""

from __future__ import annotations

from core.config import DESTINATION_NAMES, Config
from db.connection import Connection
from jobs.destinations.base import Destination
from jobs.destinations.local import LocalFolder

NAMES = DESTINATION_NAMES


def named(config: Config, conn: Connection, name: str) -> Destination:
    """The destination called `name` ('local', 'drive', 's3'), built from config; a
    ValueError when that destination is not configured."""
    if name == "drive":
        if config.drive is None:
            raise ValueError("the drive destination is not configured (GOOGLE_DRIVE_* is not set)")
        from jobs.destinations.drive import DriveDestination

        return DriveDestination(config.drive, conn, database_url=config.database_url)
    if name == "s3":
        if config.s3 is None:
            raise ValueError("the s3 destination is not configured (FALBACK_S3_* is not set)")
        from jobs.destinations.s3 import S3Destination

        return S3Destination(config.s3, conn)
    if name == "local":
        return LocalFolder(config.backup_dir)
    raise ValueError(f"unknown destination {name!r}: expected one of {', '.join(NAMES)}")


def from_config(config: Config, conn: Connection) -> Destination:
    """The first-preference destination (config.destination_names): Drive when
    `GOOGLE_DRIVE_*` credentials are set, else S3 when `FALBACK_S3_*` are, else the local
    folder, unless FALBACK_DESTINATIONS says otherwise. Drive and S3 keep their state
    through `conn` (the job's connection)."""
    return named(config, conn, config.destination_names[0])

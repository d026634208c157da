"""Destinations: where a copy goes. Google Drive when configured, else an S3-compatible
bucket when configured, else a local folder."""

from __future__ import annotations

from core.config import Config
from db.connection import Connection
from jobs.destinations.base import Destination
from jobs.destinations.local import LocalFolder


def from_config(config: Config, conn: Connection) -> Destination:
    """Drive when `GOOGLE_DRIVE_*` credentials are set (config.drive); else S3 when
    `FALBACK_S3_*` are (config.s3); else the local folder. Drive and S3 keep their state
    through `conn` (the job's connection)."""
    if config.drive is not None:
        from jobs.destinations.drive import DriveDestination

        return DriveDestination(config.drive, conn, database_url=config.database_url)
    if config.s3 is not None:
        from jobs.destinations.s3 import S3Destination

        return S3Destination(config.s3, conn)
    return LocalFolder(config.backup_dir)

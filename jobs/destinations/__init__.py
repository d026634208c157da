"""Destinations: where a copy goes. Google Drive when configured, else a local folder."""

from __future__ import annotations

from core.config import Config
from db.connection import Connection
from jobs.destinations.base import Destination
from jobs.destinations.local import LocalFolder


def from_config(config: Config, conn: Connection) -> Destination:
    """Drive when `GOOGLE_DRIVE_*` credentials are set (config.drive); else the local folder.
    Drive keeps its reservations and folder cache through `conn` (the job's connection)."""
    if config.drive is not None:
        from jobs.destinations.drive import DriveDestination

        return DriveDestination(config.drive, conn, database_url=config.database_url)
    return LocalFolder(config.backup_dir)

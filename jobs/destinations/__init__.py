"""Destinations: where a copy goes. Google Drive when configured, else a local folder."""

from __future__ import annotations

from falback.config import Config
from jobs.destinations.base import Destination
from jobs.destinations.local import LocalFolder


def from_config(config: Config) -> Destination:
    return LocalFolder(config.backup_dir)

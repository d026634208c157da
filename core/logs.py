"""Logging to stdout, one line per event, carrying the ids that matter."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging() -> None:
    root = logging.getLogger()
    if any(getattr(h, "falback", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.falback = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(os.environ.get("FALBACK_LOG_LEVEL", "INFO").upper())
    # pgserver logs every initdb/pg_ctl command line at INFO.
    logging.getLogger("pgserver").setLevel(logging.WARNING)

"""Debian's chromium (apt), driven by Playwright; no browser is downloaded at run time."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, and quiet on a machine with no network: no background fetches, no QUIC.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_chromium(playwright: Any) -> Any:
    """A headless chromium from `sync_playwright()`'s handle."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)

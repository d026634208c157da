"""Links to a file through the media resolver (listener/media.py, docs/media.md).

`GET /media/<media_id>` is the stable link of one file; `media_id` is random (ledger
column, migrations/0008). With FALBACK_PUBLIC_URL set (the web app's public origin, e.g.
https://falback.example.com) links are absolute; otherwise they are the path alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from core.env import ConfigError

PUBLIC_URL_VARIABLE = "FALBACK_PUBLIC_URL"
# 32 lower-case hex digits: a uuid4 without its dashes.
MEDIA_ID = re.compile(r"[0-9a-f]{32}")


def parse_public_url(value: str | None, name: str = PUBLIC_URL_VARIABLE) -> str | None:
    """An http(s) origin with an optional path prefix, without the trailing slash."""
    if value is None or not value.strip():
        return None
    text = value.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be an http(s) URL such as https://falback.example.com, got {value!r}")
    return text


def public_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """FALBACK_PUBLIC_URL, for code that gets a connection rather than the Config
    (db.app_rows); Config.from_env validates the same variable at start-up."""
    return parse_public_url((os.environ if env is None else env).get(PUBLIC_URL_VARIABLE))


def media_path(media_id: str) -> str:
    return f"/media/{media_id}"


def media_url(media_id: str, public_url: str | None) -> str:
    return f"{public_url or ''}{media_path(media_id)}"

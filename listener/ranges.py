"""Byte ranges and validators for the media proxy (RFC 9110 sections 13 and 14), as a
plan the proxy then carries out: which status, which bytes.

- One range (`bytes=0-99`, open-ended `bytes=100-`, suffix `bytes=-500`): 206 with
  Content-Range; a range that starts past the end (or an empty suffix): 416 with
  `Content-Range: bytes */N`.
- Several ranges (`bytes=0-1,5-9`): the whole file with 200. RFC 9110 lets a server ignore
  Range; browsers' media players ask for one range at a time, and a multipart/byteranges
  answer would buy nothing.
- A Range that does not parse, or another unit: ignored (200), as the RFC asks.
- If-Range: an entity tag must equal ours (strong comparison), a date must equal
  Last-Modified; otherwise the Range is ignored and the whole file is sent (200).
- If-None-Match naming our ETag (or `*`): 304.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

_ONE_RANGE = re.compile(r"(\d*)-(\d*)")


class Headers(Protocol):
    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class Plan:
    status: int  # 200, 206, 304 or 416
    first: int = 0
    length: int = 0

    def content_range(self, size: int) -> str | None:
        if self.status == 206:
            return f"bytes {self.first}-{self.first + self.length - 1}/{size}"
        if self.status == 416:
            return f"bytes */{size}"
        return None


def plan(size: int, headers: Headers, etag: str, last_modified: datetime | None) -> Plan:
    """What to answer a GET or HEAD for a representation of `size` bytes."""
    whole = Plan(200, 0, size)
    if _none_match(headers.get("If-None-Match"), etag):
        return Plan(304)
    header = headers.get("Range")
    if not header:
        return whole
    if_range = headers.get("If-Range")
    if if_range is not None and not _if_range_holds(if_range.strip(), etag, last_modified):
        return whole
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return whole
    specs = [s.strip() for s in spec.split(",") if s.strip()]
    if len(specs) != 1:
        return whole  # several ranges (or none): the whole file, see above
    match = _ONE_RANGE.fullmatch(specs[0])
    if not match or not (match[1] or match[2]):
        return whole
    if not match[1]:  # suffix: the last N bytes
        suffix = int(match[2])
        if suffix == 0 or size == 0:
            return Plan(416)
        first = max(0, size - suffix)
        return Plan(206, first, size - first)
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return whole  # invalid: ignored
    if first >= size:
        return Plan(416)
    last = min(int(match[2]), size - 1) if match[2] else size - 1
    return Plan(206, first, last - first + 1)


def _none_match(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    # Weak comparison for If-None-Match.
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def _if_range_holds(value: str, etag: str, last_modified: datetime | None) -> bool:
    if value.startswith('"') or value.startswith("W/"):
        return value == etag  # strong comparison: a weak tag never matches
    if last_modified is None:
        return False
    try:
        date = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return int(date.timestamp()) == int(last_modified.timestamp())

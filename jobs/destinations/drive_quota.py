"""How full the signed-in account's Drive is against what is still to back up (about.get
storageQuota), for `falback drive-check` and `falback status`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from db import drive_tokens
from db.connection import Connection

GIB = 1024**3


@dataclass(frozen=True)
class Quota:
    used: int
    limit: int | None  # None: unlimited (some Workspace plans)
    backlog: int  # bytes still to back up, as far as known
    files: int

    @property
    def fits(self) -> bool:
        return self.limit is None or self.used + self.backlog <= self.limit

    def lines(self) -> list[str]:
        limit = size(self.limit) if self.limit else "unlimited"
        lines = [
            f"storage          {size(self.used)} used of {limit}",
            f"to back up       {size(self.backlog)} in {self.files} file(s)",
        ]
        if not self.fits and self.limit is not None:
            lines.append(
                f"WARNING          the files still to back up ({size(self.backlog)}) will not fit in the"
                f" free space ({size(max(self.limit - self.used, 0))}): free space in Google Drive or add"
                " storage (Google One); uploads pause when Drive is full and resume on their own"
            )
        return lines


def quota(about: dict[str, Any], conn: Connection) -> Quota:
    """From an about.get answer that asked for storageQuota, and the backlog in Postgres."""
    found = about.get("storageQuota") or {}
    backlog, files = drive_tokens.backlog(conn)
    conn.rollback()
    limit = found.get("limit")
    return Quota(int(found.get("usage") or 0), int(limit) if limit else None, backlog, files)


def size(n: int) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB // 10 else f"{n / 1024**2:.1f} MiB"

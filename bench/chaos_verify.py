"""The chaos run's verdict, read at the destination: every accepted file is either in the
shared drive exactly once with the source's checksum, or rightly gone, or failed with a
reason; anything else is lost."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from chaos_load import Load
from chaos_local import LocalResult
from chaos_stack import Stack

FINAL = ("done", "failed", "gone")


@dataclass
class Verdict:
    accepted: int = 0
    verified: int = 0
    gone: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # reason -> files
    duplicates: int = 0  # copies at the destination beyond one per file
    lost: list[str] = field(default_factory=list)  # "url: why"
    bytes_stored: int = 0
    bytes_received: int = 0  # upload bytes Drive read off the wire, kept or not
    not_accepted: int = 0  # webhooks never answered 2xx (fal would give up too)

    def merge_local(self, local: LocalResult) -> None:
        """The local-folder phase's files count like the rest (checked in the folder)."""
        self.accepted += len(local.files) if local.ran else 0
        self.verified += local.verified
        self.duplicates += local.duplicates
        self.lost += local.lost

    @property
    def resent(self) -> int:
        return max(self.bytes_received - self.bytes_stored, 0)

    @property
    def ok(self) -> bool:
        return not self.lost and self.duplicates == 0

    def table(self) -> str:
        rows = [
            ("files accepted", str(self.accepted)),
            ("backed up and verified (md5 at the destination)", str(self.verified)),
            ("gone (source expired at fal, rightly)", str(self.gone)),
            ("failed, with reason", str(sum(self.failed.values()))),
            *((f"  {reason[:70]}", str(n)) for reason, n in self.failed.most_common()),
            ("duplicates at the destination", str(self.duplicates)),
            ("lost", str(len(self.lost))),
            ("bytes sent more than once", f"{self.resent:,} of {self.bytes_stored:,}"),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"| {name:<{width}} | {value:>12} |" for name, value in rows)


def settled(stack: Stack, load: Load) -> tuple[int, int]:
    """(accepted files with a final ledger row, accepted files)."""
    urls = [f.url for f in load.files if f.accepted]
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ledger WHERE source_url = ANY(%s) AND status = ANY(%s)",
                    (urls, list(FINAL)))  # fmt: skip
        row = cur.fetchone()
    conn.close()
    return (int(row[0]) if row else 0), len(urls)


def verify(stack: Stack, load: Load) -> Verdict:
    v = Verdict()
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, source_url, status, last_error FROM ledger")
        ledger = {url: (int(i), status, error or "") for i, url, status, error in cur.fetchall()}
    conn.close()
    copies: dict[str, list[Path]] = {}
    for info in stack.drive.files():
        if info.drive_id != stack.drive_id or info.trashed or info.content_path is None:
            continue
        copy_of = info.app_properties.get("falback_ledger_id", "?")
        copies.setdefault(copy_of, []).append(info.content_path)
        v.bytes_stored += info.size
    v.duplicates = sum(len(paths) - 1 for paths in copies.values())
    v.bytes_received = stack.drive.bytes_received
    for f in load.files:
        if not f.accepted:
            v.not_accepted += f.via == "webhook"
            continue
        v.accepted += 1
        entry = ledger.get(f.url)
        if entry is None:
            v.lost.append(f"{f.url}: accepted, no ledger row")
            continue
        ledger_id, status, error = entry
        paths = copies.get(str(ledger_id), [])
        if status == "done":
            expected = stack.cdn.file(f.url).md5()
            if paths and all(_md5(p) == expected for p in paths):
                v.verified += 1
            else:
                v.lost.append(f"{f.url}: done, but {len(paths)} copies, checksum mismatch or missing")
        elif status == "gone" and f.expires:
            v.gone += 1
        elif status == "gone":
            v.lost.append(f"{f.url}: gone, but the source never expired ({error})")
        elif status == "failed":
            v.failed[_reason(error)] += 1
        else:
            v.lost.append(f"{f.url}: still {status} ({error})")
    return v


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(error: str) -> str:
    """A failure's reason without the ids that make each message unique."""
    return error.split(": http")[0].split(" (")[0] or "(no reason recorded)"

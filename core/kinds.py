"""The one vocabulary of falback: the kinds of file it backs up, and where the app keeps them.

A file's kind is its type (upscaled video, regular video, image); the kind decides its
priority tier (1 is served first), its RQ queue and its folder at the destination. The
app tables' file columns say which column of which table holds a file of which kind.
`migrations/repeatable/*.sql` spell the same columns in SQL; tests/test_vocabulary.py
checks that they agree with this module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileKind:
    name: str  # as stored in ledger.kind
    priority: int  # 1 first
    queue: str  # the RQ queue its backup jobs go to
    folder: str  # the folder under the destination's root


KINDS: tuple[FileKind, ...] = (
    FileKind("upscale", 1, "backup-upscale", "upscale"),
    FileKind("regular", 2, "backup-regular", "regular"),
    FileKind("image", 3, "backup-images", "image"),
)
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)
BY_NAME: dict[str, FileKind] = {k.name: k for k in KINDS}

# Which kinds each backfill type covers (the user's HTTP call says "images").
BACKFILL_TYPES: dict[str, tuple[str, ...]] = {
    "upscale": ("upscale",),
    "regular": ("regular",),
    "images": ("image",),
    "all": KIND_NAMES,
}


def priority_sql(column: str = "kind") -> str:
    """A SQL expression ordering rows by their kind's priority (for ORDER BY)."""
    cases = " ".join(f"WHEN '{k.name}' THEN {k.priority}" for k in KINDS)
    return f"CASE {column} {cases} ELSE {len(KINDS) + 1} END"


@dataclass(frozen=True)
class AppFileColumn:
    """One column of an app table that holds a file URL."""

    table: str
    url_column: str
    size_column: str
    kind: str  # also the app link's `variant`


# In each table's order of importance: a row's main file is its first column with a URL.
APP_FILE_COLUMNS: tuple[AppFileColumn, ...] = (
    AppFileColumn("gen_videos", "upscale_video_url", "upscale_file_size", "upscale"),
    AppFileColumn("gen_videos", "video_url", "file_size", "regular"),
    AppFileColumn("gen_images", "image_url", "file_size", "image"),
)
APP_TABLES: tuple[str, ...] = tuple(dict.fromkeys(c.table for c in APP_FILE_COLUMNS))


def columns_of(table: str) -> tuple[AppFileColumn, ...]:
    return tuple(c for c in APP_FILE_COLUMNS if c.table == table)

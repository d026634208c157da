"""What the media resolver (listener/media.py) reads from the ledger: one file, found by
its source URL or by its media id, whether fal still guarantees it, and where its copies
are (the copies table: one per destination)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.connection import Connection, fetch_one


@dataclass(frozen=True)
class CopyAt:
    """One verified copy: its destination, where the destination holds it, its size."""

    destination: str
    location: str
    size_bytes: int | None


@dataclass(frozen=True)
class MediaFile:
    id: int
    media_id: str
    source_url: str
    status: str
    # fal's copy is inside its guaranteed window (expires_at, or created + expiry days).
    fal_fresh: bool
    destination: str | None
    destination_id: str | None
    size_bytes: int | None
    md5: str | None
    content_type: str | None
    file_name: str | None
    done_at: datetime | None
    # Every copy, in no particular order (the resolver orders them by preference).
    copies: tuple[CopyAt, ...] = ()

    @property
    def has_copy(self) -> bool:
        # Copies are recorded only once verified; a row marked gone later (fal lost it
        # early) keeps them.
        return bool(self.copies)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MediaFile:
        found = [CopyAt(c["destination"], c["location"], c["size_bytes"]) for c in record["copies"]]
        # The ledger's own copy, when a version before the copies table recorded it alone.
        if record["destination"] and record["destination_id"]:
            if all(c.destination != record["destination"] for c in found):
                found.append(CopyAt(record["destination"], record["destination_id"], record["size_bytes"]))
        fields = {f: record[f] for f in cls.__dataclass_fields__ if f != "copies"}
        return cls(**fields, copies=tuple(found))


_SELECT = """
    SELECT id, media_id, source_url, status, destination, destination_id, size_bytes, md5,
           content_type, file_name, done_at,
           coalesce(expires_at, created_at + make_interval(days => %(days)s)) > now()
               AS fal_fresh,
           (SELECT coalesce(json_agg(json_build_object('destination', c.destination,
                                                       'location', c.location,
                                                       'size_bytes', c.size_bytes)), '[]')
            FROM copies c WHERE c.ledger_id = ledger.id) AS copies
    FROM ledger
"""


def by_source_url(conn: Connection, source_url: str, expiry_days: int) -> MediaFile | None:
    return _one(conn, _SELECT + "WHERE source_url = %(key)s", source_url, expiry_days)


def by_media_id(conn: Connection, media_id: str, expiry_days: int) -> MediaFile | None:
    return _one(conn, _SELECT + "WHERE media_id = %(key)s", media_id, expiry_days)


def _one(conn: Connection, query: str, key: str, expiry_days: int) -> MediaFile | None:
    with conn.cursor() as cur:
        cur.execute(query, {"key": key, "days": expiry_days})
        row = fetch_one(cur)
    # A read: end the transaction now rather than hold it open while the file streams.
    conn.rollback()
    return MediaFile.from_record(row) if row else None

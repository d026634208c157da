"""Turn the media a fal result references into ledger rows (webhook and queue-API paths).

Which ledger kind (and so which queue and folder) a file gets:
- the webhook URL names the app row (``?table=gen_videos&id=123&variant=upscale``): the files
  of that row's media type (videos for gen_videos, images for gen_images; or the only file)
  take the variant as their kind and are linked to the row;
- otherwise a video is ``upscale`` when the fal app, file name or URL path says "upscal",
  else ``regular``; an image is ``image``;
- audio and 3D models are backed up too, at the lowest priority (kind ``image``): the app
  does not track them, but they were paid for and expire like the rest;
- anything else (LoRA weights, JSON configs, unknown types) is not media: skipped, and
  named in the delivery's note.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from db import app_sync, blobs, ledger
from db.connection import Connection, Row
from jobs.blob_source import blob_url
from jobs.fal.kinds import MediaKind
from jobs.fal.payload import AppLink
from jobs.fal.walker import DEFAULT_MAX_REFS, MediaRef, MediaScan

log = logging.getLogger(__name__)

_BIGINT_MAX = 2**63 - 1
# No real fal result comes near this; it bounds what one signed body can make us insert.
MAX_FILES = DEFAULT_MAX_REFS
NOTE_LIMIT = 2000
_KIND_BY_MEDIA = {MediaKind.IMAGE: "image", MediaKind.AUDIO: "image", MediaKind.MODEL: "image"}


@dataclass(frozen=True)
class Blob:
    sha256: str
    content_type: str | None
    data: bytes


@dataclass
class Plan:
    files: list[ledger.NewFile] = field(default_factory=list)
    blobs: list[Blob] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def needs_more(self) -> bool:
        """Whether recording takes statements beyond the ledger rows' (`recorded`)."""
        return bool(self.blobs) or any(f.source_table for f in self.files)

    def note(self) -> str | None:
        return clip("; ".join(self.notes), NOTE_LIMIT) if self.notes else None


def clip(text: str, limit: int) -> str:
    """Text safe for a Postgres text column (no NUL, valid UTF-8), cut to `limit` chars."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def optional(text: str | None, limit: int = 255) -> str | None:
    return clip(text, limit) if text else None


def storable(url: str) -> bool:
    """Postgres text cannot hold NUL or lone surrogates; such a URL cannot be a real file."""
    if "\x00" in url:
        return False
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def plan_files(scan: MediaScan, *, request_id: str, link: AppLink | None, fal_app: str | None) -> Plan:
    plan = Plan()
    media = scan.media
    linked = {id(ref) for ref in _linked_refs(media, link)}
    if len(media) + scan.unexamined > MAX_FILES:
        plan.notes.append(
            f"{len(media) + scan.unexamined} files referenced; only the first {MAX_FILES} were kept"
        )
        media = media[:MAX_FILES]
    if scan.truncated:
        plan.notes.append("nested too deep to walk completely; some files may be missing")
    for ref in media:
        row_link = link if id(ref) in linked else None
        if not storable(ref.url):
            plan.notes.append(f"{clip(ref.path, 200)}: URL is not valid text, skipped")
            continue
        kind = _kind(ref, row_link, fal_app)
        if kind is None:
            plan.notes.append(f"{clip(ref.path, 200)}: not media ({_describe(ref)}), skipped")
            continue
        source_url = ref.url
        file_name = optional(ref.file_name)
        content_type = optional(ref.content_type)
        size = ref.file_size if ref.file_size is not None and ref.file_size <= _BIGINT_MAX else None
        if ref.data is not None:
            sha = hashlib.sha256(ref.data).hexdigest()
            plan.blobs.append(Blob(sha, content_type, ref.data))
            source_url = blob_url(sha)
            file_name = file_name or sha[:16] + (_extension(content_type) or "")
            size = len(ref.data)
        plan.files.append(
            ledger.NewFile(
                source_url=source_url,
                kind=kind,
                source_table=row_link.source_table if row_link else None,
                source_id=row_link.source_id if row_link else None,
                variant=row_link.variant if row_link else None,
                fal_request_id=request_id,
                file_name=file_name,
                content_type=content_type,
                expected_size=size,
            )
        )
    if scan.more_problems:  # the count before the list: the note is cut at its limit
        plan.notes.append(
            f"{len(scan.problems) + scan.more_problems} URLs cannot be copied;"
            f" the first {len(scan.problems)} follow"
        )
    plan.notes.extend(f"{clip(p.path, 200)}: {clip(p.message, 200)}" for p in scan.problems)
    return plan


def record_files(conn: Connection, plan: Plan, expiry_days: int) -> list[tuple[int, str]]:
    """Create the plan's ledger rows, then the rest (`recorded`)."""
    return recorded(conn, plan, ledger.insert_files(conn, plan.files, expiry_days))


def recorded(conn: Connection, plan: Plan, created: Sequence[Row]) -> list[tuple[int, str]]:
    """The rest of recording the plan once its ledger rows are `created` (as
    db/ledger.insert_files returns them), in the caller's transaction: store its blobs and
    bring the app row they are linked to up to date; return (ledger id, kind) of the rows
    created, for `jobs.dispatch.top_up_for`."""
    for blob in plan.blobs:
        blobs.insert_blob(conn, blob.sha256, blob.content_type, blob.data)
    _sync_linked(conn, plan)
    return [(int(r["id"]), str(r["kind"])) for r in created]


def _sync_linked(conn: Connection, plan: Plan) -> None:
    """The link is an unsigned hint naming a row of the user's table: whatever goes wrong
    there must not undo the signed files (app_sync.sync_guarded). The row's next backup
    job syncs it again."""
    app_sync.sync_guarded(conn, [(f.source_table, f.source_id) for f in plan.files if f.source_table])


def _linked_refs(media: Sequence[MediaRef], link: AppLink | None) -> list[MediaRef]:
    if link is None:
        return []
    matching = [ref for ref in media if ref.kind is link.media_kind]
    # The app said which row this request fills; a lone file of unknown type is that file.
    if not matching and len(media) == 1 and media[0].kind is MediaKind.OTHER:
        return list(media)
    return matching


def _kind(ref: MediaRef, link: AppLink | None, fal_app: str | None) -> str | None:
    if link is not None:
        return link.variant
    if ref.kind is MediaKind.VIDEO:
        return "upscale" if _says_upscale(ref, fal_app) else "regular"
    return _KIND_BY_MEDIA.get(ref.kind)


def _says_upscale(ref: MediaRef, fal_app: str | None) -> bool:
    path = "" if ref.data is not None else urlsplit(ref.url).path
    return any("upscal" in (text or "").lower() for text in (fal_app, ref.file_name, path))


def _describe(ref: MediaRef) -> str:
    return ", ".join(x for x in (ref.file_name, ref.content_type) if x) or ref.kind.value


def _extension(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return mimetypes.guess_extension(content_type.split(";")[0].strip().lower(), strict=False)

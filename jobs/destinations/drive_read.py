"""Reading copies back from Google Drive: metadata (size, md5Checksum) with files.get,
computed by Drive itself, so a check downloads nothing; the bytes with files.get
alt=media on the destination's own authorized session."""

from __future__ import annotations

from collections.abc import Iterator

from db import drive_state
from db.copies import Copy
from jobs.destinations.drive import DriveDestination
from jobs.destinations.readback import CHUNK, Found


class DriveReader:
    name = "drive"

    def __init__(self, destination: DriveDestination) -> None:
        self.destination = destination
        self.api = destination.api

    def check(self) -> None:
        self.destination.folders.space()  # the configured folder (or My Drive) is visible

    def inspect(self, copy: Copy) -> Found | None:
        self.api.label = f"ledger {copy.ledger_id}"
        file = self.api.get_file(copy.location, "id,size,md5Checksum,trashed", trashed_too=True)
        if file is None or file.get("trashed"):
            return None  # a trashed copy is one a person or a check threw away
        md5 = file.get("md5Checksum")
        return Found(int(file.get("size") or -1), str(md5) if md5 else None)

    def read(self, copy: Copy) -> Iterator[bytes]:
        self.api.label = f"ledger {copy.ledger_id}"
        url = f"{self.api.settings.api_base_url}/drive/v3/files/{copy.location}"
        answer = self.api.uploads.call(
            "GET",
            url,
            "download a copy",
            params={"alt": "media", "supportsAllDrives": "true"},
            stream=True,
        )
        try:
            yield from answer.iter_content(CHUNK)
        finally:
            answer.close()

    def remove(self, copy: Copy) -> None:
        """Trash it (a Content manager may trash, not delete) and drop the row's reserved
        file id, so the next attempt uploads a new file instead of checking this one."""
        self.api.label = f"ledger {copy.ledger_id}"
        self.api.trash_file(copy.location)
        drive_state.release(self.destination.conn, copy.ledger_id, copy.location)
        self.destination.conn.commit()

    def close(self) -> None:
        self.api.close()

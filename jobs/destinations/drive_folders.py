"""The folder layout in Drive: `<GOOGLE_DRIVE_FOLDER_ID>/<kind>/<YYYY-MM>/`.

Each folder is made once and reused. The id is cached in Postgres; a miss takes an
advisory lock for that (parent, name), looks again (cache, then Drive by name, parent and
type) and only then creates, so two workers cannot make two `upscale` folders. Drive's
own listings lag behind writes, which is why the lock is in Postgres and not a search.
"""

from __future__ import annotations

from db import drive_state as db
from db.connection import Connection
from jobs.destinations.drive_api import FOLDER_MIME, DriveApi, DriveApiError
from jobs.errors import PermanentError

TAG = "falback_folder"  # appProperties key on the folders falback made


class Folders:
    def __init__(self, api: DriveApi, conn: Connection, root_id: str | None) -> None:
        self.api = api
        self.conn = conn
        self.root_id = root_id  # None: the My Drive root of whoever the token is for

    def path(self, *names: str) -> list[str]:
        """The ids of root/names[0]/names[1]/..., made where missing; the last is the target."""
        parent = self.root()
        ids = []
        for name in names:
            parent = self.ensure(parent, name)
            ids.append(parent)
        return ids

    def root(self) -> str:
        if self.root_id is None:
            # "root" is an alias whose meaning depends on the token; cache by the real id.
            found = self.api.get_file("root", "id")
            if found is None:
                raise PermanentError("Drive has no My Drive root for this account")
            self.root_id = str(found["id"])
        return self.root_id

    def ensure(self, parent: str, name: str) -> str:
        cached = db.cached_folder(self.conn, parent, name)
        self.conn.commit()
        if cached:
            return cached
        try:
            db.lock_folder(self.conn, parent, name)
            folder_id = db.cached_folder(self.conn, parent, name) or self._find_or_create(parent, name)
            db.remember_folder(self.conn, parent, name, folder_id)
            self.conn.commit()  # also releases the lock
        except BaseException:
            self.conn.rollback()
            raise
        return folder_id

    def forget(self, folder_ids: list[str]) -> None:
        db.forget_folders(self.conn, folder_ids)
        self.conn.commit()

    def _find_or_create(self, parent: str, name: str) -> str:
        query = (f"name = '{quote(name)}' and '{quote(parent)}' in parents"
                 f" and mimeType = '{FOLDER_MIME}' and trashed = false")
        found = self.api.list_files(query, "id,appProperties")
        # Prefer ours; a folder of that name a person made is fine too.
        found.sort(key=lambda f: TAG not in (f.get("appProperties") or {}))
        if found:
            return str(found[0]["id"])
        try:
            return str(self.api.create_folder(name, parent, {TAG: "1"})["id"])
        except DriveApiError as e:
            if e.status == 404 and parent == self.root_id:
                raise PermanentError(
                    f"the Drive folder {parent} (GOOGLE_DRIVE_FOLDER_ID) was not found, or"
                    f" {self.api.settings.client_email} cannot see it: add it to the shared drive"
                    " as a Content manager (run `falback drive-check`)"
                ) from None
            raise


def quote(value: str) -> str:
    """A string literal for Drive's q language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")

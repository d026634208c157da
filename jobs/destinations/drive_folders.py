"""The folder layout in Drive: `<GOOGLE_DRIVE_FOLDER_ID>/<kind>/<YYYY-MM>/`.

Each folder is made once and reused. The id is cached in Postgres; a miss takes an
advisory lock for that (parent, name), looks again (cache, then Drive by name, parent and
type) and only then creates, so two workers cannot make two `upscale` folders. Drive's
own listings lag behind writes, which is why the lock is in Postgres and not a search.

The configured folder is looked up once per process: whether it sits in a shared drive
decides the corpus searches use and how advice is worded.
"""

from __future__ import annotations

from dataclasses import dataclass

from db import drive_state as db
from db.connection import Connection
from jobs.destinations.drive_advice import folder_missing
from jobs.destinations.drive_api import FOLDER_MIME, DriveApi
from jobs.destinations.drive_errors import DriveApiError
from jobs.errors import PermanentError

TAG = "falback_folder"  # appProperties key on the folders falback made
# Personal-account mode without GOOGLE_DRIVE_FOLDER_ID: falback's own tree in My Drive.
OWN_TREE = "falback"
OWN_TAG = "falback_tree"


@dataclass(frozen=True)
class Space:
    root_id: str  # GOOGLE_DRIVE_FOLDER_ID, or the real id of the My Drive root
    drive_id: str | None  # the shared drive that holds it; None: a My Drive


class Folders:
    def __init__(self, api: DriveApi, conn: Connection, root_id: str | None) -> None:
        self.api = api
        self.conn = conn
        self.root_id = root_id  # None: the My Drive root of whoever the token is for
        self.known: Space | None = None

    def space(self) -> Space:
        """Where backups go, looked up once (files.get on the folder, or on "root")."""
        if self.known is None and self.root_id is None and self.api.settings.personal:
            self.known = Space(self._own_tree(), None)
        if self.known is None:
            found = self.api.get_file(self.root_id or "root", "id,mimeType,driveId")
            if found is None:
                if self.root_id is None:
                    raise PermanentError("Drive has no My Drive root for this account")
                raise PermanentError(folder_missing(self.api.settings))
            if found.get("mimeType") != FOLDER_MIME:
                raise PermanentError(f"GOOGLE_DRIVE_FOLDER_ID {self.root_id} is a file, not a folder")
            # "root" is an alias whose meaning depends on the token; keep the real id.
            self.known = Space(str(found["id"]), found.get("driveId") or None)
        return self.known

    @property
    def shared(self) -> bool | None:
        """In a shared drive? None until looked up."""
        return None if self.known is None else self.known.drive_id is not None

    def path(self, *names: str) -> list[str]:
        """The ids of root/names[0]/names[1]/..., made where missing; the last is the target."""
        parent = self.space().root_id
        ids = []
        for name in names:
            parent = self.ensure(parent, name)
            ids.append(parent)
        return ids

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

    def _own_tree(self) -> str:
        """`falback/` at the top of the user's My Drive, made once. Found by its tag, not
        by "'root' in parents": with drive.file only falback's own files are visible."""
        cached = db.cached_folder(self.conn, "root", OWN_TREE)
        self.conn.commit()
        if cached:
            return cached
        try:
            db.lock_folder(self.conn, "root", OWN_TREE)
            folder_id = db.cached_folder(self.conn, "root", OWN_TREE)
            if folder_id is None:
                query = (
                    f"appProperties has {{ key='{OWN_TAG}' and value='1' }}"
                    f" and mimeType = '{FOLDER_MIME}' and trashed = false"
                )
                found = self.api.list_files(query, "id", drive_id=None)
                folder_id = (
                    str(found[0]["id"])
                    if found
                    else str(self.api.create_folder(OWN_TREE, "root", {TAG: "1", OWN_TAG: "1"})["id"])
                )
            db.remember_folder(self.conn, "root", OWN_TREE, folder_id)
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return folder_id

    def _find_or_create(self, parent: str, name: str) -> str:
        query = (
            f"name = '{quote(name)}' and '{quote(parent)}' in parents"
            f" and mimeType = '{FOLDER_MIME}' and trashed = false"
        )
        found = self.api.list_files(query, "id,appProperties", drive_id=self.space().drive_id)
        # Prefer ours; a folder of that name a person made is fine too.
        found.sort(key=lambda f: TAG not in (f.get("appProperties") or {}))
        if found:
            return str(found[0]["id"])
        try:
            return str(self.api.create_folder(name, parent, {TAG: "1"})["id"])
        except DriveApiError as e:
            if e.status == 404 and parent == self.space().root_id:
                raise PermanentError(f"{folder_missing(self.api.settings)} ({e})") from None
            raise


def quote(value: str) -> str:
    """A string literal for Drive's q language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")

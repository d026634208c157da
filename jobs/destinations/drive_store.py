"""What one attempt's upload keeps in `drive_files`: the resumable session (URI and the
offset Drive confirmed) and the size and MD5 that were sent.

Each write is committed at once: the job's connection is rolled back when the attempt
fails, and a later attempt (or a crash restart) must still find the session to resume.
"""

from __future__ import annotations

from db import drive_state as db
from db.connection import Connection


class SessionStore:
    def __init__(self, conn: Connection, ledger_id: int, file_id: str, owner: str) -> None:
        self.conn, self.ledger_id, self.file_id = conn, ledger_id, file_id
        self.owner = owner  # the claim: a worker whose lease ran out changes nothing

    def save_session(self, uri: str | None, offset: int) -> None:
        db.save_session(self.conn, self.ledger_id, self.owner, uri, offset)
        self.conn.commit()

    def record_sent(self, size: int, md5: str) -> None:
        db.record_sent(self.conn, self.ledger_id, self.file_id, size, md5)
        self.conn.commit()

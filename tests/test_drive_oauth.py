"""The personal-account mode end to end: backups owned by the signed-in user in
falback's own folder, a token refreshed mid-upload on the same session, a revoked
sign-in that pauses Drive (nothing failed) until drive-login resumes every file, one
refresh shared by two workers, and no token, code or secret in any log line."""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from google.auth.transport.requests import Request

from core.config import Config
from db.connection import Connection
from jobs.destinations.drive_oauth import SharedCredentials
from jobs.sweep import run_sweep
from tests.fakes.cdn import FakeCdn
from tests.support.drive_oauth import (
    BOB,
    Personal,
    personal_config,
    sign_in,
    sign_in_row,
)
from tests.support.processes import falback
from tests.support.rows import add_image, add_video, ledger_rows, query
from tests.support.web import create_app_for
from tests.support.workers import run_worker


@pytest.fixture
def oauth_config(config: Config, personal: Personal) -> Config:
    return personal_config(config, personal.emulator)


def seed(conn: Connection, cdn: FakeCdn) -> None:
    add_video(conn, cdn, 1, size=300_000)
    add_video(conn, cdn, 2, size=200_000)
    add_image(conn, cdn, 1)


def backfill(config: Config) -> None:
    result = falback(config, "backfill", "--type", "all", "--limit", "100")
    assert result.returncode == 0, result.stderr


def test_a_backfill_uploads_as_the_user_into_falbacks_own_folder(
    oauth_config: Config, conn: Connection, cdn: FakeCdn, personal: Personal
) -> None:
    sign_in(oauth_config, personal)
    seed(conn, cdn)
    backfill(oauth_config)
    run_worker(oauth_config)
    rows = ledger_rows(conn)
    assert {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
    copies = {c.id: c for c in personal.backups()}
    assert len(copies) == 3 and len(personal.own_tree()) == 1
    for row in rows:
        copy = copies[row["destination_id"]]
        assert copy.owner == BOB and copy.drive_id is None  # the user's own My Drive
        top, kind, month = personal.path_of(copy)  # under the My Drive root
        assert (top, kind) == ("falback", row["kind"]) and re.fullmatch(r"\d{4}-\d{2}", month)


def test_an_access_token_expiring_mid_upload_is_refreshed_on_the_same_session(
    oauth_config: Config, conn: Connection, cdn: FakeCdn, personal: Personal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sign_in(oauth_config, personal)
    add_video(conn, cdn, 1, size=6 * 1024 * 1024 + 5000)  # seven 1 MiB session PUTs
    personal.emulator.expire_tokens_after_chunks = 2
    backfill(oauth_config)
    run_worker(oauth_config)
    [row] = ledger_rows(conn)
    assert (row["status"], row["attempts"]) == ("done", 1)
    users = personal.emulator.users
    assert users is not None and users.refresh_grants == 1
    assert len(personal.emulator.sessions()) == 1  # the same upload session went on
    assert personal.emulator.requests["initiate"] == 1
    lines = "\n".join(r.getMessage() for r in caplog.records)
    assert "refreshed the Drive access token of bob@gmail.com" in lines
    for secret in personal.secrets():
        assert secret not in lines


def test_a_revoked_sign_in_pauses_drive_and_a_new_login_resumes_every_file(
    oauth_config: Config, conn: Connection, cdn: FakeCdn, personal: Personal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sign_in(oauth_config, personal)
    users = personal.emulator.users
    assert users is not None
    users.revoke()  # the user removed falback's access; the access token dies too
    personal.emulator.revoke_tokens()
    seed(conn, cdn)
    backfill(oauth_config)
    run_worker(oauth_config)

    rows = ledger_rows(conn)
    # The first job paused Drive (its row 'retrying', its attempt given back); the rest
    # saw the pause before claiming and wait 'queued'. Nothing failed, no attempt spent.
    assert {r["status"] for r in rows} <= {"retrying", "queued"}
    assert {r["attempts"] for r in rows} == {0}
    assert personal.backups() == []
    [pause] = query(conn, "SELECT * FROM destination_pauses WHERE destination = 'drive'")
    assert "falback drive-login" in pause["reason"]
    row = sign_in_row(conn)
    assert row is not None and row["revoked_at"] is not None
    health = FlaskClient(create_app_for(oauth_config)).get("/healthz")
    assert health.status_code == 200 and "falback drive-login" in health.get_json()["drive"]
    lines = "\n".join(r.getMessage() for r in caplog.records)
    assert "run `falback drive-login`" in lines

    said = sign_in(oauth_config, personal)
    assert any("signed in as" in s for s in said)
    assert query(conn, "SELECT * FROM destination_pauses") == []
    run_sweep(oauth_config)
    run_worker(oauth_config)
    rows = ledger_rows(conn)
    assert {r["status"] for r in rows} == {"done"} and len(personal.backups()) == 3
    assert "drive" not in FlaskClient(create_app_for(oauth_config)).get("/healthz").get_json()
    lines = "\n".join(r.getMessage() for r in caplog.records)
    for secret in personal.secrets():
        assert secret not in lines


def test_two_workers_share_one_refresh(oauth_config: Config, conn: Connection, personal: Personal) -> None:
    sign_in(oauth_config, personal)
    with conn.cursor() as cur:  # the shared token is about to expire
        cur.execute("UPDATE drive_oauth SET access_expires_at = now()")
    conn.commit()
    assert oauth_config.drive is not None and oauth_config.database_url is not None
    workers = [SharedCredentials(oauth_config.drive, oauth_config.database_url) for _ in range(2)]
    start = threading.Barrier(2)

    def work(creds: SharedCredentials) -> None:
        start.wait()
        creds.refresh(Request())

    threads = [threading.Thread(target=work, args=(c,)) for c in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    users = personal.emulator.users
    assert users is not None and users.refresh_grants == 1
    assert workers[0].token == workers[1].token and workers[0].token
    assert all(c.expiry is not None and c.expiry > datetime.now(UTC).replace(tzinfo=None) for c in workers)
    row = sign_in_row(conn)
    assert row is not None and row["refreshes"] == 1

"""The Drive destination against the emulator: sizes, layout, verification, and one
ledger row -> one Drive file under retries, lost state and concurrent attempts.

Jobs run in-process here (`backup_file`, the worker's function) for speed; the worker
process itself is exercised in test_drive_faults.py, test_drive_crash.py and
test_drive_e2e.py.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from redis import Redis

from core.config import Config
from db import attempts, drive_state
from db.connection import Connection, connect, fetch_all
from jobs import backup
from jobs.backfill import backfill
from jobs.destinations import from_config
from jobs.destinations.drive import DriveCopy, DriveDestination
from jobs.destinations.drive_folders import Folders
from jobs.errors import VerifyError
from jobs.fetch import SourceFetcher
from jobs.transfer import copy_file
from jobs.worker import WorkerContext
from tests.fakes.cdn import FakeCdn
from tests.support.drive import ALICE, CHUNK, Drive, Key, drive_env, only_row
from tests.support.rows import add_image, add_video, ledger_rows


def run_job(config: Config, ledger_id: int) -> object:
    assert config.redis_url
    context = WorkerContext(config, Redis.from_url(config.redis_url))
    try:
        return backup.backup_file(context, ledger_id)
    finally:
        context.close()


def backup_all(config: Config, conn: Connection, redis: Redis) -> list[dict[str, Any]]:
    backfill(config, conn, redis, "all", 1000)
    for row in ledger_rows(conn):
        run_job(config, row["id"])
    return ledger_rows(conn)


def assert_one_verified_copy(drive: Drive, cdn: FakeCdn, row: dict[str, Any]) -> None:
    copies = [f for f in drive.backups() if f.app_properties.get("falback_ledger_id") == str(row["id"])]
    assert len(copies) == 1, copies
    [copy] = copies
    expected = cdn.file(row["source_url"])
    assert row["status"] == "done" and row["destination"] == "drive"
    assert (copy.size, copy.md5) == (expected.size, expected.md5()) == (row["size_bytes"], row["md5"])
    assert row["destination_id"] == copy.id
    assert row["destination_url"] == f"https://drive.google.com/file/d/{copy.id}/view?usp=drivesdk"


@pytest.mark.parametrize(
    ("size", "options", "requests"),
    [
        (0, {}, {"multipart": 1}),
        (20_000, {}, {"multipart": 1}),
        (5 * 1024 * 1024, {}, {"multipart": 1}),  # up to 5 MB: one request
        (6 * CHUNK, {}, {"initiate": 1, "chunk": 6}),  # an exact multiple: the last chunk waits
        (6 * CHUNK + 7, {}, {"initiate": 1, "chunk": 7}),
        (CHUNK - 7, {"send_length": False}, {"multipart": 1}),  # unknown size, ends within a chunk
        (2 * CHUNK + 7, {"send_length": False}, {"initiate": 1, "chunk": 3}),  # bytes a-b/*
        (6 * CHUNK + 7, {"send_length": False}, {"initiate": 1, "chunk": 7}),
        (6 * CHUNK, {"send_length": False}, {"initiate": 1, "chunk": 6, "status": 1}),  # ends: */N
    ],
)
def test_every_size_lands_verified(
    drive_config: Config,
    conn: Connection,
    cdn: FakeCdn,
    redis: Redis,
    drive: Drive,
    size: int,
    options: dict[str, Any],
    requests: dict[str, int],
) -> None:
    add_video(conn, cdn, 1, size=size, **options)
    [row] = backup_all(drive_config, conn, redis)
    assert_one_verified_copy(drive, cdn, row)
    counted = {k: drive.emulator.requests[k] for k in ("multipart", "initiate", "chunk", "status")}
    assert {k: v for k, v in counted.items() if v} == requests
    assert drive.emulator.bytes_received >= size and only_row(conn)["session_uri"] is None


def test_layout_names_tags_and_links(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    for n in range(3):
        add_video(conn, cdn, n, size=10_000 + n, upscale_size=6 * CHUNK + n, age_days=2)
    add_image(conn, cdn, 9, size=5000)
    rows = backup_all(drive_config, conn, redis)
    emulator = drive.emulator
    folders = {(f.name, f.parents[0]): f for f in emulator.files() if f.content_path is None}
    kinds = {name for (name, parent) in folders if parent == drive.folder_id}
    assert kinds == {"upscale", "regular", "image"}  # one folder per kind, made once
    assert len([f for f in folders.values() if f.name == "upscale"]) == 1
    assert all(f.app_properties == {"falback_folder": "1"} for f in folders.values() if f.name != "fal")
    by_id = {f.id: f for f in emulator.files()}
    for row in rows:
        assert_one_verified_copy(drive, cdn, row)
        copy = by_id[row["destination_id"]]
        month, kind = by_id[copy.parents[0]], by_id[by_id[copy.parents[0]].parents[0]]
        assert (kind.name, month.name) == (row["kind"], row["source_created_at"].strftime("%Y-%m"))
        assert copy.name == f"{row['id']}-{row['source_url'].rsplit('/', 1)[1]}"
        assert copy.app_properties == {
            "falback_ledger_id": str(row["id"]),
            "falback_source": hashlib.sha256(row["source_url"].encode()).hexdigest(),
        }
        assert copy.mime_type == ("image/png" if row["kind"] == "image" else "video/mp4")
        assert copy.permissions == []  # GOOGLE_DRIVE_SHARE_ANYONE is off by default
    with conn.cursor() as cur:
        cur.execute("SELECT backup_drive_url, backup_storage_url FROM gen_videos ORDER BY id")
        videos = fetch_all(cur)
    conn.commit()
    main = {r["source_url"].rsplit("/", 1)[1]: r["destination_url"] for r in rows}
    assert [v["backup_drive_url"] for v in videos] == [main[f"video-{n}_up.mp4"] for n in range(3)]
    assert {v["backup_storage_url"] for v in videos} == {None}


def test_share_with_anyone_with_the_link(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, sa_key: Key
) -> None:
    shared = config.replace(google=drive_env(drive, sa_key, GOOGLE_DRIVE_SHARE_ANYONE="true"))
    add_image(conn, cdn, 1)
    [row] = backup_all(shared, conn, redis)
    [permission] = drive.emulator.file(row["destination_id"]).permissions
    assert (permission["type"], permission["role"], permission["allowFileDiscovery"]) == (
        "anyone",
        "reader",
        False,
    )


def test_impersonation_backs_up_into_the_users_my_drive(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, sa_key: Key
) -> None:
    folder = drive.emulator.create_folder("fal backups", owner=ALICE)
    as_alice = config.replace(
        google=drive_env(drive, sa_key, GOOGLE_DRIVE_IMPERSONATE=ALICE, GOOGLE_DRIVE_FOLDER_ID=folder)
    )
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    [row] = backup_all(as_alice, conn, redis)
    assert row["status"] == "done", row["last_error"]
    copy = drive.emulator.file(row["destination_id"])
    assert (copy.owner, copy.drive_id, copy.md5) == (ALICE, None, cdn.file(row["source_url"]).md5())
    assert {g.subject for g in drive.emulator.grants} == {ALICE}


def requeue(conn: Connection, row_id: int) -> None:
    """As if the worker died after the upload but before recording it (the copy too: the
    job copies only to destinations with no recorded copy)."""
    with conn.cursor() as cur:
        cur.execute("UPDATE ledger SET status = 'queued' WHERE id = %s", (row_id,))
        cur.execute("DELETE FROM copies WHERE ledger_id = %s", (row_id,))
    conn.commit()


def test_a_verified_copy_is_found_not_made_again(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    [first] = backup_all(drive_config, conn, redis)
    requeue(conn, first["id"])
    uploads = (drive.emulator.requests["initiate"], drive.emulator.bytes_received)
    assert run_job(drive_config, first["id"]) == "done"
    again = only_row(conn)
    assert again["destination_id"] == first["destination_id"] and again["attempts"] == 2
    assert (drive.emulator.requests["initiate"], drive.emulator.bytes_received) == uploads
    assert len(cdn.file(first["source_url"]).requests) == 1  # not even read again
    assert_one_verified_copy(drive, cdn, again)


@pytest.mark.parametrize("lost", ["sent_md5", "reservation"])
def test_a_copy_the_ledger_lost_track_of_is_checked_not_duplicated(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, lost: str
) -> None:
    """The file exists but the ledger cannot vouch for it (no record of what was sent, or
    no reservation at all): it is found by id or appProperties, the create answers 409,
    and the source is streamed again only to compare."""
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    [first] = backup_all(drive_config, conn, redis)
    requeue(conn, first["id"])
    with conn.cursor() as cur:
        if lost == "sent_md5":
            cur.execute("UPDATE drive_files SET sent_md5 = NULL")
        else:
            cur.execute("DELETE FROM drive_files")
    conn.commit()
    assert run_job(drive_config, first["id"]) == "done"
    again = only_row(conn)
    assert again["destination_id"] == first["destination_id"]
    assert drive.emulator.requests["list"] >= (3 if lost == "reservation" else 2)
    assert [e.status for e in drive.emulator.log if e.type == "initiate"] == [200, 409]
    assert len(cdn.file(first["source_url"]).requests) == 2
    assert_one_verified_copy(drive, cdn, again)


def test_a_copy_that_does_not_match_is_trashed_and_made_again(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    """The service account is a Content manager (fileOrganizer): it may trash the bad
    copy, not delete it (that needs a Manager)."""
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    backfill(drive_config, conn, redis, "all", 10)
    row = attempts.claim(conn, only_row(conn)["id"], "test", 60)
    conn.commit()
    assert row is not None
    destination = from_config(drive_config, conn)
    fetcher = SourceFetcher(drive_config)
    upload = destination.open(row, None)
    assert isinstance(upload, DriveCopy)
    for chunk in fetcher.open(row.source_url).chunks():
        upload.write(chunk)
    with pytest.raises(
        VerifyError, match="the Drive copy did not match the source .* moved it to Drive's trash"
    ):
        upload.finish(6 * CHUNK + 1, "0" * 32)  # as if Drive had stored other bytes
    fetcher.close()
    bad_id = upload.file_id
    assert [f.id for f in drive.backups(trashed=True)] == [bad_id]
    assert drive.emulator.requests["delete"] == 0
    assert drive_state.reservation(conn, row.id) is None
    # The next attempt reserves a new id and uploads a good copy.
    stored = copy_file(row, SourceFetcher(drive_config), destination)
    assert stored.id != bad_id and stored.md5 == cdn.file(row.source_url).md5()
    assert [f.id for f in drive.backups()] == [stored.id]


def test_a_bad_copy_found_later_is_replaced(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    """A worker run, with the service account a Content manager: the bad copy goes to the
    trash (a DELETE would be refused) and a good one replaces it in the same attempt."""
    add_image(conn, cdn, 1, size=30_000)
    [first] = backup_all(drive_config, conn, redis)
    requeue(conn, first["id"])
    with conn.cursor() as cur:  # the ledger says other bytes were sent than Drive holds
        cur.execute("UPDATE drive_files SET sent_md5 = %s", ("f" * 32,))
    conn.commit()
    assert run_job(drive_config, first["id"]) == "done"
    again = only_row(conn)
    assert again["destination_id"] != first["destination_id"] and again["attempts"] == 2
    assert_one_verified_copy(drive, cdn, again)
    assert [f.id for f in drive.backups(trashed=True)] == [first["destination_id"]]


def test_concurrent_attempts_on_one_row_make_one_file(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, database_url: str
) -> None:
    """Two workers on one row at once (a lease that ran out under a live but stalled
    worker): both use the row's one reserved id, so Drive ends with one file."""
    add_video(conn, cdn, 1, size=8 * CHUNK + 3, slow_delay=0.002)
    backfill(drive_config, conn, redis, "all", 10)
    row = attempts.claim(conn, only_row(conn)["id"], "test", 60)
    conn.commit()
    assert row is not None
    results: list[object] = []
    barrier = threading.Barrier(2)

    def attempt() -> None:
        own = connect(database_url)
        try:
            destination = from_config(drive_config, own)
            barrier.wait()
            results.append(copy_file(row, SourceFetcher(drive_config), destination))
        except Exception as e:  # noqa: BLE001 - collected for the assertion below
            results.append(e)
        finally:
            own.close()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {getattr(r, "id", r) for r in results}
    assert len(ids) == 1 and not isinstance(next(iter(ids)), Exception), results
    assert [f.id for f in drive.backups()] == list(ids)
    assert drive.emulator.file(str(ids.pop())).md5 == cdn.file(row.source_url).md5()


def test_folders_are_made_once_by_racing_workers(
    drive_config: Config, drive: Drive, database_url: str
) -> None:
    assert drive_config.drive is not None
    made: list[str] = []
    barrier = threading.Barrier(4)

    def make() -> None:
        own = connect(database_url)
        try:
            destination = DriveDestination(drive_config.drive, own)  # type: ignore[arg-type]
            barrier.wait()
            made.append(Folders(destination.api, own, drive.folder_id).path("upscale", "2026-11")[-1])
        finally:
            own.close()

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and len(made) == 4
    assert sorted(f.name for f in drive.emulator.files() if f.name != "fal") == ["2026-11", "upscale"]
    assert drive.emulator.requests["create"] == 2


def lose_reservation(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("DELETE FROM drive_files")
    conn.commit()


@pytest.mark.parametrize("mode", ["shared drive", "impersonated"])
def test_searches_use_the_one_corpus_that_holds_the_backups(
    config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, sa_key: Key, mode: str
) -> None:
    """Folder lookups and the appProperties search ask the shared drive (corpora=drive,
    driveId) or the user's own files (corpora=user), never allDrives."""
    env = {}
    if mode == "impersonated":
        env = {
            "GOOGLE_DRIVE_IMPERSONATE": ALICE,
            "GOOGLE_DRIVE_FOLDER_ID": drive.emulator.create_folder("backups", owner=ALICE),
        }
    settings = config.replace(google=drive_env(drive, sa_key, **env))
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    [first] = backup_all(settings, conn, redis)
    requeue(conn, first["id"])
    lose_reservation(conn)  # the next attempt searches by appProperties
    assert run_job(settings, first["id"]) == "done"
    assert only_row(conn)["destination_id"] == first["destination_id"]
    lists = [e.query for e in drive.emulator.log if e.type == "list"]
    assert len(lists) >= 3  # two folders, then the search
    where = (
        {"corpora": "drive", "driveId": drive.drive_id, "includeItemsFromAllDrives": "true"}
        if mode == "shared drive"
        else {"corpora": "user"}
    )
    assert all(
        {k: q.get(k) for k in ("corpora", "driveId", "includeItemsFromAllDrives")}
        == {"driveId": None, "includeItemsFromAllDrives": None, **where}
        for q in lists
    ), lists


@pytest.mark.parametrize("incomplete", [1, 100])
def test_an_incomplete_search_is_not_taken_for_not_found(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive, incomplete: int
) -> None:
    """incompleteSearch: true with no files may hide the copy a lost reservation points
    to: the search is asked again, and if it stays incomplete the attempt waits, rather
    than upload a second copy."""
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    [first] = backup_all(drive_config, conn, redis)
    requeue(conn, first["id"])
    lose_reservation(conn)
    drive.emulator.faults.add("incomplete_search", incomplete)
    initiated = drive.emulator.requests["initiate"]
    if incomplete == 1:
        assert run_job(drive_config, first["id"]) == "done"
        assert only_row(conn)["destination_id"] == first["destination_id"]
    else:
        run_job(drive_config, first["id"])
        row = only_row(conn)
        assert row["status"] == "retrying" and "incomplete" in row["last_error"], row["last_error"]
        assert drive.emulator.requests["initiate"] == initiated  # nothing uploaded
    assert [f.id for f in drive.backups()] == [first["destination_id"]]


def test_a_copy_someone_trashed_is_made_again(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    """The reserved id now names a trashed file, which can never become the copy: the
    reservation is given up and a new file is made in the same attempt."""
    add_video(conn, cdn, 1, size=6 * CHUNK + 1)
    [first] = backup_all(drive_config, conn, redis)
    requeue(conn, first["id"])
    drive.emulator.trash(first["destination_id"])
    assert run_job(drive_config, first["id"]) == "done"
    again = only_row(conn)
    assert again["destination_id"] != first["destination_id"]
    assert_one_verified_copy(drive, cdn, again)


def test_a_deleted_folder_is_made_again(
    drive_config: Config, conn: Connection, cdn: FakeCdn, redis: Redis, drive: Drive
) -> None:
    add_video(conn, cdn, 1, size=1000)
    [first] = backup_all(drive_config, conn, redis)
    month = drive.emulator.file(first["destination_id"]).parents[0]
    drive.emulator.remove(month)  # someone deleted regular/<month>, and the copy in it
    requeue(conn, first["id"])
    run_job(drive_config, first["id"])
    failed = only_row(conn)
    assert failed["status"] == "retrying"
    assert failed["last_error"].endswith("is gone; the next attempt makes it again")
    requeue(conn, first["id"])
    assert run_job(drive_config, first["id"]) == "done"
    again = only_row(conn)
    assert drive.emulator.file(again["destination_id"]).parents[0] != month
    assert_one_verified_copy(drive, cdn, again)

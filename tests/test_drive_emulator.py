"""The Drive emulator is faithful: the stock google-api-python-client and google-auth,
pointed at it, upload, resume, list and download exactly as they would against Google."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.auth.transport import requests as google_requests
from google.oauth2 import service_account
from googleapiclient.discovery import build, build_from_document
from googleapiclient.errors import HttpError, ResumableUploadError
from googleapiclient.http import MediaFileUpload, MediaIoBaseDownload, MediaIoBaseUpload

from tests.fakes.drive_emulator import DriveEmulator

SCOPES = ["https://www.googleapis.com/auth/drive"]
SA_EMAIL = "falback@demo-project.iam.gserviceaccount.com"
ALICE = "alice@example.com"
CHUNK = 256 * 1024
FILE_FIELDS = "id,name,mimeType,parents,size,md5Checksum,appProperties,driveId,webViewLink"
# google-auth ships without type hints; these aliases keep mypy --strict quiet.
Credentials: Any = service_account.Credentials
AuthorizedSession: Any = google_requests.AuthorizedSession


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def wrong_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def drive(tmp_path: Path, key: rsa.RSAPrivateKey) -> Iterator[DriveEmulator]:
    with DriveEmulator(
        tmp_path / "drive", public_pem(key), service_account_email=SA_EMAIL, allowed_subjects={ALICE}
    ) as emulator:
        yield emulator


@pytest.fixture
def shared(drive: DriveEmulator) -> tuple[str, str]:
    """(shared drive id, a folder inside it) the service account is a member of."""
    drive_id = drive.create_shared_drive("Backups", members={SA_EMAIL, ALICE})
    return drive_id, drive.create_folder("fal", drive_id)


def credentials(drive: DriveEmulator, key: rsa.RSAPrivateKey, scopes: list[str] = SCOPES) -> Any:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": SA_EMAIL,
        "client_id": "1234567890",
        "token_uri": drive.token_uri,
    }
    return Credentials.from_service_account_info(info, scopes=scopes)


def service(drive: DriveEmulator, creds: Any) -> Any:
    # The bundled (static) discovery doc with rootUrl moved: metadata *and* upload URLs
    # then go to the emulator over plain http (api_endpoint alone keeps uploads on https).
    return build_from_document(drive.discovery_document(), credentials=creds)


@pytest.fixture
def svc(drive: DriveEmulator, key: rsa.RSAPrivateKey) -> Any:
    return service(drive, credentials(drive, key))


def random_file(tmp_path: Path, size: int, name: str = "video.mp4") -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def start_upload(svc: Any, path: Path, parent: str | None, chunksize: int = CHUNK, **body: Any) -> Any:
    media = MediaFileUpload(str(path), mimetype="video/mp4", chunksize=chunksize, resumable=True)
    metadata = {"name": path.name, **({"parents": [parent]} if parent else {}), **body}
    return svc.files().create(body=metadata, media_body=media, fields=FILE_FIELDS, supportsAllDrives=True)


def finish(request: Any) -> dict[str, Any]:
    response = None
    while response is None:
        _, response = request.next_chunk()
    return dict(response)


def download(svc: Any, file_id: str, chunksize: int = 300 * 1024) -> bytes:
    out = io.BytesIO()
    downloader = MediaIoBaseDownload(
        out, svc.files().get_media(fileId=file_id, supportsAllDrives=True), chunksize=chunksize
    )
    done = False
    while not done:
        _, done = downloader.next_chunk()
    return out.getvalue()


def error_reason(exc: HttpError) -> str:
    return str(json.loads(exc.content)["error"]["errors"][0]["reason"])


# ---------------------------------------------------------------- uploads and downloads


def test_multi_chunk_upload_reads_back(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 4 * CHUNK + 12345)
    result = finish(start_upload(svc, path, shared[1], appProperties={"src": "a1"}))

    assert result["size"] == str(path.stat().st_size)
    assert result["md5Checksum"] == md5_of(path)
    assert result["parents"] == [shared[1]] and result["driveId"] == shared[0]
    assert result["appProperties"] == {"src": "a1"}
    got = svc.files().get(fileId=result["id"], fields="md5Checksum,size", supportsAllDrives=True).execute()
    assert got == {"md5Checksum": md5_of(path), "size": str(path.stat().st_size)}
    assert download(svc, result["id"]) == path.read_bytes()
    assert drive.requests["initiate"] == 1 and drive.requests["chunk"] == 5
    assert drive.bytes_received == path.stat().st_size
    info = drive.file(result["id"])
    assert info.content_path is not None and info.content_path.stat().st_size == info.size


def test_exact_multiple_of_chunk_size(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 4 * CHUNK)
    result = finish(start_upload(svc, path, shared[1]))
    assert (result["size"], result["md5Checksum"]) == (str(4 * CHUNK), md5_of(path))
    assert drive.requests["chunk"] == 4 and drive.file_content(result["id"]) == path.read_bytes()


def test_empty_file(drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path) -> None:
    path = random_file(tmp_path, 0)
    result = finish(start_upload(svc, path, shared[1]))
    assert (result["size"], result["md5Checksum"]) == ("0", hashlib.md5().hexdigest())
    assert download(svc, result["id"]) == b""  # 416 on Range, as the client expects


def test_multipart_and_simple_uploads(drive: DriveEmulator, svc: Any, shared: tuple[str, str]) -> None:
    data = os.urandom(70_000) + b"\r\n--not-a-boundary--\r\n"
    media = MediaIoBaseUpload(io.BytesIO(data), mimetype="image/png", resumable=False)
    made = (
        svc.files()
        .create(
            body={"name": "a.png", "parents": [shared[1]]},
            media_body=media,
            fields="id,md5Checksum,mimeType",
            supportsAllDrives=True,
        )
        .execute()
    )
    assert made["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert made["mimeType"] == "image/png" and drive.requests["multipart"] == 1

    # No metadata at all: uploadType=media into the caller's My Drive (impersonated user).
    simple = MediaIoBaseUpload(io.BytesIO(data), mimetype="image/png", resumable=False)
    made = (
        service(drive, _alice_creds(drive, svc))
        .files()
        .create(media_body=simple, fields="id,md5Checksum,name")
        .execute()
    )
    assert made["md5Checksum"] == hashlib.md5(data).hexdigest() and made["name"] == "Untitled"
    assert drive.requests["simple"] == 1 and drive.file(made["id"]).owner == ALICE


def _alice_creds(drive: DriveEmulator, svc: Any) -> Any:
    return svc._http.credentials.with_subject(ALICE)


def test_files_update_replaces_content(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    first = finish(start_upload(svc, random_file(tmp_path, CHUNK + 1, "a.bin"), shared[1]))
    new = random_file(tmp_path, 2 * CHUNK + 7, "b.bin")
    request = svc.files().update(
        fileId=first["id"],
        body={"name": "b.bin"},
        media_body=MediaFileUpload(str(new), chunksize=CHUNK, resumable=True),
        fields="id,name,size,md5Checksum",
        supportsAllDrives=True,
    )
    result = finish(request)
    assert result == {
        "id": first["id"],
        "name": "b.bin",
        "size": str(2 * CHUNK + 7),
        "md5Checksum": md5_of(new),
    }


def test_range_download(drive: DriveEmulator, key: rsa.RSAPrivateKey, shared: tuple[str, str]) -> None:
    file_id = drive.add_file("x.bin", bytes(range(256)) * 4, shared[1])
    session = AuthorizedSession(credentials(drive, key))
    url = f"{drive.url}/drive/v3/files/{file_id}?alt=media&supportsAllDrives=true"
    part = session.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == bytes(range(10, 20))
    assert part.headers["Content-Range"] == "bytes 10-19/1024"
    assert session.get(url, headers={"Range": "bytes=-4"}).content == bytes(range(252, 256))
    assert session.get(url, headers={"Range": "bytes=2000-"}).status_code == 416
    assert session.get(url).content == bytes(range(256)) * 4


# ---------------------------------------------------------------- resuming and faults


def test_resume_after_dropped_connection(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 3 * CHUNK + 99)
    request = start_upload(svc, path, shared[1])
    request.next_chunk()  # initiate + first chunk
    drive.faults.add("drop_connection", after_bytes=CHUNK // 2)
    with pytest.raises(OSError):  # ConnectionResetError / BrokenPipeError from the socket
        request.next_chunk()
    result = finish(request)  # the client asks "bytes */N" first, then resumes

    assert result["md5Checksum"] == md5_of(path)
    assert drive.requests["status"] == 1
    session = drive.session(request.resumable_uri)
    assert session.committed == path.stat().st_size
    assert session.bytes_received == path.stat().st_size + CHUNK // 2


def test_server_error_on_chunk_then_resume(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 2 * CHUNK + 5)
    request = start_upload(svc, path, shared[1])
    request.next_chunk()
    drive.faults.add("server_error", status=503)
    with pytest.raises(HttpError) as caught:
        request.next_chunk()
    assert caught.value.resp.status == 503 and error_reason(caught.value) == "backendError"
    assert finish(request)["md5Checksum"] == md5_of(path)
    assert drive.faults.fired == [("server_error", "chunk")]


def test_too_many_requests_carries_retry_after(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 2 * CHUNK)
    request = start_upload(svc, path, shared[1])
    drive.faults.add("too_many_requests", on="initiate", retry_after=7)
    with pytest.raises(HttpError) as caught:
        request.next_chunk()
    assert caught.value.resp.status == 429 and caught.value.resp["retry-after"] == "7"
    assert error_reason(caught.value) == "rateLimitExceeded"
    assert finish(request)["md5Checksum"] == md5_of(path)


@pytest.mark.parametrize(
    ("kind", "on", "status", "reason", "message"),
    [
        ("user_rate_limit", "chunk", 403, "userRateLimitExceeded", "User Rate Limit Exceeded."),
        ("rate_limit", "chunk", 403, "rateLimitExceeded", "Rate Limit Exceeded"),
        ("storage_quota", "initiate", 403, "storageQuotaExceeded", "Service Accounts do not"),
        # The 750 GB/day cap: rclone's --drive-stop-on-upload-limit keys on this exact message.
        ("upload_limit", "initiate", 403, "userRateLimitExceeded", "User rate limit exceeded."),
    ],
)
def test_error_faults_look_like_drive(
    drive: DriveEmulator,
    svc: Any,
    shared: tuple[str, str],
    tmp_path: Path,
    kind: str,
    on: str,
    status: int,
    reason: str,
    message: str,
) -> None:
    request = start_upload(svc, random_file(tmp_path, 2 * CHUNK), shared[1])
    if on == "chunk":
        request.next_chunk()
    drive.faults.add(kind)
    with pytest.raises(HttpError) as caught:
        request.next_chunk()
    error = json.loads(caught.value.content)["error"]
    assert caught.value.resp.status == status == error["code"]
    assert error["errors"][0]["reason"] == reason
    assert error["errors"][0]["domain"] == "usageLimits"
    assert error["message"].startswith(message)
    if on == "initiate":
        assert isinstance(caught.value, ResumableUploadError)


def test_daily_upload_cap(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    with DriveEmulator(tmp_path / "d", public_pem(key), daily_upload_limit=CHUNK) as drive:
        folder = drive.create_shared_drive("Backups")
        svc = service(drive, credentials(drive, key))
        # The upload that crosses the cap still completes, as Drive documents ...
        finish(start_upload(svc, random_file(tmp_path, 2 * CHUNK), folder))
        with pytest.raises(ResumableUploadError) as caught:  # ... the next one is refused
            finish(start_upload(svc, random_file(tmp_path, 10, "small.bin"), folder))
        assert json.loads(caught.value.content)["error"]["message"] == "User rate limit exceeded."


def test_short_confirmation_keeps_fewer_bytes(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 4 * CHUNK + 3)
    request = start_upload(svc, path, shared[1], chunksize=2 * CHUNK)
    drive.faults.add("short_confirm")  # 308 confirms 256 KiB of a 512 KiB chunk
    status, _ = request.next_chunk()
    assert status.resumable_progress == CHUNK
    assert finish(request)["md5Checksum"] == md5_of(path)
    session = drive.session(request.resumable_uri)
    assert session.bytes_received == path.stat().st_size + CHUNK


def test_an_odd_acknowledgement_and_the_stock_client(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    """A 308 may confirm a count that is not a multiple of 256 KiB; the stock client then
    sends whole chunks from there, which Drive takes."""
    path = random_file(tmp_path, 4 * CHUNK + 3)
    request = start_upload(svc, path, shared[1], chunksize=2 * CHUNK)
    drive.faults.add("short_confirm", keep_bytes=100_000)
    status, _ = request.next_chunk()
    assert status.resumable_progress == 100_000
    assert finish(request)["md5Checksum"] == md5_of(path)
    assert 400 not in [e.status for e in drive.log if e.type == "chunk"]


def test_session_expiry_answers_404(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 3 * CHUNK)
    request = start_upload(svc, path, shared[1])
    request.next_chunk()
    drive.faults.add("session_expired")
    for _ in range(2):  # the chunk, then the client's status query: both 404
        with pytest.raises(HttpError) as caught:
            request.next_chunk()
        assert caught.value.resp.status == 404
    assert drive.session(request.resumable_uri).expired
    assert finish(start_upload(svc, path, shared[1]))["md5Checksum"] == md5_of(path)


def test_auth_error_fault_makes_the_client_refresh(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str]
) -> None:
    drive.faults.add("auth_error", on="get")
    assert svc.files().get(fileId=shared[1], supportsAllDrives=True).execute()["id"] == shared[1]
    drive.revoke_tokens()
    assert svc.files().get(fileId=shared[1], supportsAllDrives=True).execute()["id"] == shared[1]
    assert len(drive.grants) == 3


# ---------------------------------------------------------------- raw protocol


def test_raw_resumable_protocol(
    drive: DriveEmulator, key: rsa.RSAPrivateKey, shared: tuple[str, str]
) -> None:
    session = AuthorizedSession(credentials(drive, key))
    started = session.post(
        f"{drive.url}/upload/drive/v3/files?uploadType=resumable"
        "&supportsAllDrives=true&fields=id,size,md5Checksum",
        json={"name": "raw.bin", "parents": [shared[1]]},
        headers={"X-Upload-Content-Type": "application/octet-stream"},
    )
    assert started.status_code == 200
    uri = started.headers["Location"]
    total = 5 * CHUNK // 2
    data = os.urandom(total)

    def put(content_range: str, body: Any = b"") -> Any:
        return session.put(uri, data=body, headers={"Content-Range": content_range})

    empty = put("bytes */*")
    assert empty.status_code == 308 and "Range" not in empty.headers
    assert put(f"bytes 0-{CHUNK - 1}/*", data[:CHUNK]).headers["Range"] == f"bytes=0-{CHUNK - 1}"
    assert put(f"bytes {CHUNK}-{CHUNK + 99}/*", data[CHUNK : CHUNK + 100]).status_code == 400
    # Chunked transfer encoding (a generator body) and an overlapping resend both work.
    half = CHUNK // 2
    gen = (data[i : min(i + 1000, half + CHUNK)] for i in range(half, half + CHUNK, 1000))
    assert put(f"bytes {half}-{half + CHUNK - 1}/*", gen).headers["Range"] == f"bytes=0-{half + CHUNK - 1}"
    # A non-final chunk is judged by its own length, wherever it starts: from this odd
    # offset half a unit is refused, a whole unit is taken.
    odd = half + CHUNK
    assert put(f"bytes {odd}-{odd + half - 1}/*", data[odd : odd + half]).status_code == 400
    assert put(f"bytes {odd}-{total - 1}/*", data[odd:]).headers["Range"] == f"bytes=0-{total - 1}"
    done = put(f"bytes */{total}")  # the data ended with a whole chunk: an empty finish
    assert done.status_code == 200
    assert done.json() == {
        "id": done.json()["id"],
        "size": str(total),
        "md5Checksum": hashlib.md5(data).hexdigest(),
    }
    assert put(f"bytes */{total}").status_code == 200  # a later query sees it complete


# ---------------------------------------------------------------- auth


def test_token_signed_with_wrong_key_is_rejected(drive: DriveEmulator, wrong_key: rsa.RSAPrivateKey) -> None:
    svc = service(drive, credentials(drive, wrong_key))
    with pytest.raises(RefreshError, match="invalid_grant"):
        svc.files().list().execute()
    assert drive.grants == []


def test_api_needs_a_bearer_token(drive: DriveEmulator) -> None:
    for headers, reason in (({}, "required"), ({"Authorization": "Bearer nope"}, "authError")):
        request = urllib.request.Request(f"{drive.url}/drive/v3/files", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request)
        assert caught.value.code == 401
        assert json.loads(caught.value.read())["error"]["errors"][0]["reason"] == reason


def test_readonly_scope_cannot_write(
    drive: DriveEmulator, key: rsa.RSAPrivateKey, shared: tuple[str, str]
) -> None:
    creds = credentials(drive, key, ["https://www.googleapis.com/auth/drive.readonly"])
    with pytest.raises(HttpError) as caught:
        service(drive, creds).files().create(
            body={"name": "x", "parents": [shared[1]]}, supportsAllDrives=True
        ).execute()
    assert caught.value.resp.status == 403
    assert error_reason(caught.value) == "insufficientPermissions"


def test_impersonation_needs_delegation(drive: DriveEmulator, svc: Any, tmp_path: Path) -> None:
    mallory = service(drive, _alice_creds(drive, svc).with_subject("mallory@example.com"))
    with pytest.raises(RefreshError, match="unauthorized_client"):
        mallory.files().list().execute()
    alice = service(drive, _alice_creds(drive, svc))
    result = finish(start_upload(alice, random_file(tmp_path, CHUNK + 1), None))
    info = drive.file(result["id"])
    assert (info.owner, info.drive_id) == (ALICE, None)
    assert drive.grants[-1].subject == ALICE


# ---------------------------------------------------------------- metadata API


def test_list_filters_with_q(drive: DriveEmulator, svc: Any, shared: tuple[str, str]) -> None:
    files = svc.files()
    for name, sha in (("a.mp4", "s1"), ("it's.mp4", "s2"), ("c.mp4", "s1")):
        files.create(
            body={"name": name, "parents": [shared[1]], "appProperties": {"sha": sha}}, supportsAllDrives=True
        ).execute()
    files.create(
        body={"name": "sub", "parents": [shared[1]], "mimeType": "application/vnd.google-apps.folder"},
        supportsAllDrives=True,
    ).execute()

    def names(q: str, **kw: Any) -> list[str]:
        found, token = [], None
        while True:
            page = files.list(
                q=q,
                corpora="drive",
                driveId=shared[0],
                pageSize=1,
                includeItemsFromAllDrives=True,
                supportsAllDrives=True,
                fields="nextPageToken, files(id, name, appProperties)",
                pageToken=token,
                **kw,
            ).execute()
            found += [f["name"] for f in page["files"]]
            if not (token := page.get("nextPageToken")):
                return found

    base = f"'{shared[1]}' in parents and trashed = false"
    assert names(f"appProperties has {{ key='sha' and value='s1' }} and {base}") == ["a.mp4", "c.mp4"]
    assert names("name = 'it\\'s.mp4'") == ["it's.mp4"]
    assert names(f"mimeType = 'application/vnd.google-apps.folder' and {base}") == ["sub"]
    assert names(f"not mimeType = 'application/vnd.google-apps.folder' and {base}", orderBy="name desc") == [
        "it's.mp4",
        "c.mp4",
        "a.mp4",
    ]
    # Without includeItemsFromAllDrives a shared drive's files stay out of the list.
    assert files.list(q="name = 'a.mp4'").execute()["files"] == []
    with pytest.raises(HttpError) as caught:
        files.list(q="name = ").execute()
    assert caught.value.resp.status == 400 and error_reason(caught.value) == "invalid"


def test_generate_ids_and_conflict(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    ids = svc.files().generateIds(count=2, space="drive", type="files").execute()["ids"]
    assert len(ids) == 2
    folder = {
        "id": ids[0],
        "name": "f",
        "parents": [shared[1]],
        "mimeType": "application/vnd.google-apps.folder",
    }
    assert svc.files().create(body=folder, supportsAllDrives=True).execute()["id"] == ids[0]
    with pytest.raises(HttpError) as caught:
        svc.files().create(body=folder, supportsAllDrives=True).execute()
    assert caught.value.resp.status == 409
    path = random_file(tmp_path, CHUNK + 1)
    assert finish(start_upload(svc, path, shared[1], id=ids[1]))["id"] == ids[1]
    with pytest.raises(ResumableUploadError) as caught_upload:  # a retried upload: 409
        finish(start_upload(svc, path, shared[1], id=ids[1]))
    assert caught_upload.value.resp.status == 409
    with pytest.raises(HttpError) as unusable:
        svc.files().create(
            body={"id": "made-up", "name": "x", "parents": [shared[1]]}, supportsAllDrives=True
        ).execute()
    assert unusable.value.resp.status == 400


def test_shared_drive_versus_storage_quota(
    drive: DriveEmulator, svc: Any, shared: tuple[str, str], tmp_path: Path
) -> None:
    path = random_file(tmp_path, 1000)
    with pytest.raises(ResumableUploadError) as caught:  # the service account's own My Drive
        finish(start_upload(svc, path, None))
    assert error_reason(caught.value) == "storageQuotaExceeded"
    # A My Drive folder shared with the service account does not help: it would own the file.
    alices = drive.create_folder("inbox", owner=ALICE, shared_with={SA_EMAIL})
    with pytest.raises(ResumableUploadError) as caught:
        finish(start_upload(svc, path, alices))
    assert error_reason(caught.value) == "storageQuotaExceeded"
    # A shared-drive folder is invisible without supportsAllDrives=true ...
    with pytest.raises(HttpError) as missing:
        svc.files().get(fileId=shared[1]).execute()
    assert missing.value.resp.status == 404 and error_reason(missing.value) == "notFound"
    # ... and with it, the upload lands in the shared drive.
    assert finish(start_upload(svc, path, shared[1]))["driveId"] == shared[0]
    assert svc.drives().get(driveId=shared[0]).execute()["name"] == "Backups"


def test_permissions_and_delete(drive: DriveEmulator, svc: Any, shared: tuple[str, str]) -> None:
    file_id = drive.add_file("p.bin", b"x", shared[1])
    perm = (
        svc.permissions()
        .create(
            fileId=file_id,
            supportsAllDrives=True,
            body={"type": "anyone", "role": "reader", "allowFileDiscovery": False},
        )
        .execute()
    )
    assert (perm["id"], perm["type"], perm["role"]) == ("anyoneWithLink", "anyone", "reader")
    assert drive.file(file_id).permissions[0]["type"] == "anyone"
    svc.files().delete(fileId=file_id, supportsAllDrives=True).execute()
    assert file_id not in {f.id for f in drive.files()}


def test_shared_drive_roles(drive: DriveEmulator, svc: Any) -> None:
    """Drive's role table: a Content manager (fileOrganizer) may trash but not delete; a
    Contributor (writer) may add files but not trash them; a Manager (organizer) may delete."""

    def drive_where(role: str) -> tuple[str, str]:
        drive_id = drive.create_shared_drive(role, members={SA_EMAIL: role})
        return drive_id, drive.add_file("f.bin", b"x", drive_id)

    files = svc.files()

    def trash(file_id: str, value: bool = True) -> Any:
        return files.update(
            fileId=file_id, body={"trashed": value}, fields="id,trashed", supportsAllDrives=True
        ).execute()

    def refused(call: Any) -> str:
        with pytest.raises(HttpError) as caught:
            call.execute()
        assert caught.value.resp.status == 403
        return error_reason(caught.value)

    _, content_managers = drive_where("fileOrganizer")
    assert trash(content_managers) == {"id": content_managers, "trashed": True}
    assert trash(content_managers, False)["trashed"] is False  # and back
    assert (
        refused(files.delete(fileId=content_managers, supportsAllDrives=True))
        == "insufficientFilePermissions"
    )
    contributors_drive, contributors = drive_where("writer")
    svc.files().create(
        body={"name": "new", "parents": [contributors_drive]}, supportsAllDrives=True
    ).execute()
    assert (
        refused(files.update(fileId=contributors, body={"trashed": True}, supportsAllDrives=True))
        == "insufficientFilePermissions"
    )
    viewers_drive, _ = drive_where("reader")
    assert (
        refused(files.create(body={"name": "new", "parents": [viewers_drive]}, supportsAllDrives=True))
        == "insufficientFilePermissions"
    )
    _, managers = drive_where("organizer")
    files.delete(fileId=managers, supportsAllDrives=True).execute()
    assert managers not in {f.id for f in drive.files()}


def test_list_corpora(drive: DriveEmulator, svc: Any, shared: tuple[str, str]) -> None:
    """corpora=drive needs driveId (and the other way round); user is the caller's own
    files; allDrives is both; an injected incomplete search says so and finds nothing."""
    in_drive = drive.add_file("x.bin", b"x", shared[1])
    mine = drive.add_file("x.bin", b"x", drive.create_folder("mine", owner=ALICE, shared_with={SA_EMAIL}))
    files = svc.files()

    def found(**kw: Any) -> tuple[set[str], bool]:
        page = files.list(
            q="name = 'x.bin'", fields="incompleteSearch,files(id)", supportsAllDrives=True, **kw
        ).execute()
        return {f["id"] for f in page["files"]}, page["incompleteSearch"]

    everything = {"includeItemsFromAllDrives": True}
    assert found(corpora="drive", driveId=shared[0], **everything) == ({in_drive}, False)
    assert found(corpora="user") == ({mine}, False)
    assert found(corpora="allDrives", **everything) == ({in_drive, mine}, False)
    for bad in (
        {"corpora": "drive", **everything},
        {"driveId": shared[0], **everything},
        {"corpora": "drive", "driveId": shared[0]},
        {"corpora": "everything"},
    ):
        with pytest.raises(HttpError) as caught:
            found(**bad)
        assert caught.value.resp.status == 400
    drive.faults.add("incomplete_search")
    assert found(corpora="allDrives", **everything) == (set(), True)


def test_about_names_the_user(drive: DriveEmulator, svc: Any, key: rsa.RSAPrivateKey) -> None:
    assert svc.about().get(fields="user(emailAddress)").execute() == {"user": {"emailAddress": SA_EMAIL}}
    with pytest.raises(HttpError) as caught:  # about.get insists on fields
        svc.about().get().execute()
    assert caught.value.resp.status == 400
    alice = service(drive, credentials(drive, key).with_subject(ALICE))
    assert alice.about().get(fields="user").execute()["user"]["emailAddress"] == ALICE


def test_fields_are_validated_against_the_schema(svc: Any, shared: tuple[str, str]) -> None:
    with pytest.raises(HttpError) as caught:
        svc.files().get(fileId=shared[1], fields="id,bogus", supportsAllDrives=True).execute()
    assert caught.value.resp.status == 400
    got = svc.files().get(fileId=shared[1], supportsAllDrives=True).execute()
    assert set(got) == {"kind", "id", "name", "mimeType"}  # Drive's default field set


# ---------------------------------------------------------------- pointing the client


def test_discovery_service_url_build(
    drive: DriveEmulator, key: rsa.RSAPrivateKey, shared: tuple[str, str]
) -> None:
    svc = build(
        "drive",
        "v3",
        credentials=credentials(drive, key),
        cache_discovery=False,
        discoveryServiceUrl=drive.discovery_url,
    )
    assert svc.drives().get(driveId=shared[0]).execute()["id"] == shared[0]


def test_api_endpoint_alone_keeps_uploads_on_https(
    drive: DriveEmulator, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """Why the tests rebuild the discovery doc: client_options only swaps the netloc of
    upload URLs (discovery._fix_up_media_path_base_url) and needs the service path."""
    svc = build(
        "drive",
        "v3",
        credentials=credentials(drive, key),
        static_discovery=True,
        client_options={"api_endpoint": drive.url},
    )
    assert svc.files().get(fileId="X").uri.startswith(f"{drive.url}/files/X")
    media = MediaFileUpload(str(random_file(tmp_path, 10)), resumable=True)
    upload = svc.files().create(body={}, media_body=media).uri
    assert upload.startswith(drive.url.replace("http://", "https://") + "/upload/drive/v3/")

"""A Google Drive v3 emulator: a local HTTP server for tests and the offline demo.

It speaks the wire protocol that google-auth and google-api-python-client use against
Google (OAuth2 JWT-bearer token exchange, files.*, resumable/multipart/media uploads,
alt=media with Range, permissions, shared drives), keeps content on disk (never whole in
memory) and can inject the faults Drive is known for. See ``DriveEmulator``.

Metadata calls reach it with ``client_options={"api_endpoint": url + "/drive/v3/"}``, as
falback builds its client. For uploads through the stock client that is not enough (it
keeps ``https`` for upload URLs), so point the whole discovery document at it:

    service = build("drive", "v3", credentials=creds, cache_discovery=False,
                    discoveryServiceUrl=drive.discovery_url)
    # or: build_from_document(drive.discovery_document(), credentials=creds)

Standalone: ``python -m devkit.drive_emulator --port 8555 --dir PATH --public-key FILE``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import re
import secrets
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devkit.drive_users import CODE_GRANT, DEVICE_GRANT, Grant, OAuthRefusal, UserAccounts

log = logging.getLogger(__name__)

GRANULARITY = 256 * 1024  # Drive's chunk unit: every non-final chunk is a multiple of it
BLOCK = 256 * 1024  # read/write unit, so memory stays flat whatever the upload size
FOLDER = "application/vnd.google-apps.folder"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth always signs for Google's endpoint, whatever token_uri says (PR #784).
GOOGLE_AUDIENCES = {
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
}
_S = "https://www.googleapis.com/auth/"
READ_SCOPES = {
    _S + s
    for s in (
        "drive",
        "drive.file",
        "drive.readonly",
        "drive.appdata",
        "drive.metadata",
        "drive.metadata.readonly",
    )
}
WRITE_SCOPES = {_S + s for s in ("drive", "drive.file", "drive.appdata")}

# Each fault kind -> the request type it hits unless ``on=`` says otherwise.
FAULT_KINDS = {
    "server_error": "chunk",
    "too_many_requests": "chunk",
    "user_rate_limit": "chunk",
    "rate_limit": "chunk",
    "storage_quota": "initiate",
    "upload_limit": "initiate",
    "drop_connection": "chunk",
    "short_confirm": "chunk",
    "session_expired": "chunk",
    "auth_error": "any",
    "incomplete_search": "list",
}
REQUEST_TYPES = {
    "token",
    "discovery",
    "initiate",
    "chunk",
    "status",
    "multipart",
    "simple",
    "get",
    "media",
    "list",
    "create",
    "update",
    "delete",
    "generate_ids",
    "permissions",
    "drives_get",
    "about",
    "unknown",
}
# Shared-drive roles (Drive's "Roles and permissions" table): what each may do there.
ROLES = ("organizer", "fileOrganizer", "writer", "commenter", "reader")
CAN_ADD = {"organizer", "fileOrganizer", "writer"}  # add files, edit metadata and content
CAN_TRASH = {"organizer", "fileOrganizer"}  # move items to the trash, and back
CAN_DELETE = {"organizer"}  # files.delete: "the user must be an organizer on the parent folder"
SA_QUOTA_MESSAGE = (
    "Service Accounts do not have storage quota. Leverage shared drives "
    "(https://developers.google.com/workspace/drive/api/guides/about-shareddrives), "
    "or use OAuth delegation (http://support.google.com/a/answer/7281227) instead."
)
USER_RATE_MESSAGE = (
    "User Rate Limit Exceeded. Rate of requests for user exceed configured project quota. "
    "You may consider re-evaluating expected per-user traffic to the API and adjust "
    "project quota limits accordingly."
)


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def _new_file_id() -> str:
    return "1" + secrets.token_urlsafe(24)[:32]


# ---------------------------------------------------------------- errors and values


class DriveError(Exception):
    """An error answer in Drive's JSON shape."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message, self.domain = code, reason, message, domain
        self.location, self.headers = location, headers or {}

    def response(self) -> _Response:
        item: dict[str, Any] = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location:
            item["location"] = self.location
            item["locationType"] = "header" if self.location == "Authorization" else "parameter"
        body = {"error": {"code": self.code, "message": self.message, "errors": [item]}}
        return _Response.json(self.code, body, self.headers)


def _not_found(file_id: str) -> DriveError:
    return DriveError(404, "notFound", f"File not found: {file_id}.", location="fileId")


def _bad_request(message: str, reason: str = "badRequest") -> DriveError:
    return DriveError(400, reason, message)


def _invalid_param(name: str) -> DriveError:
    return DriveError(400, "invalid", "Invalid Value", location=name)


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description


class _ClientGone(Exception):
    """The client closed the connection before sending the whole body."""


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: tuple[Path, int, int] | None = None  # (file, offset, length) sent in blocks
    drop: bool = False  # close the socket (RST) without answering

    @classmethod
    def json(cls, status: int, obj: object, headers: dict[str, str] | None = None) -> _Response:
        hdrs = {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}
        return cls(status, json.dumps(obj).encode(), hdrs)


@dataclass(frozen=True)
class Principal:
    """Who a token was issued to; ``subject`` is the impersonated user, if any."""

    client_email: str
    subject: str | None
    scopes: frozenset[str]

    @property
    def email(self) -> str:
        return self.subject or self.client_email

    @property
    def is_service_account(self) -> bool:
        return self.subject is None


@dataclass
class SharedDrive:
    id: str
    name: str
    members: dict[str, str] | None  # email -> role; None: everybody, as organizer

    def role(self, email: str) -> str | None:
        return "organizer" if self.members is None else self.members.get(email)


@dataclass
class Item:
    """A file or folder; ``content_path`` holds the bytes of a file."""

    id: str
    name: str
    mime_type: str
    parents: list[str]
    drive_id: str | None
    owner: str | None
    app_properties: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    description: str | None = None
    trashed: bool = False
    size: int = 0
    md5: str = ""
    sha256: str = ""
    content_path: Path | None = None
    readers: set[str] = field(default_factory=set)
    permissions: list[dict[str, Any]] = field(default_factory=list)
    created_time: str = field(default_factory=_now_rfc3339)
    modified_time: str = field(default_factory=_now_rfc3339)
    is_root: bool = False

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER


@dataclass
class UploadSession:
    """A resumable upload; ``committed`` bytes are on disk and in the hashes."""

    id: str
    uri: str
    principal: Principal
    metadata: dict[str, Any]
    fields: str | None
    all_drives: bool
    mime_type: str
    total: int | None
    path: Path
    target: str | None  # files.update: the file whose content is replaced
    committed: int = 0
    bytes_received: int = 0
    md5: Any = field(default_factory=hashlib.md5)
    sha256: Any = field(default_factory=hashlib.sha256)
    file_id: str | None = None
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class FileInfo:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    drive_id: str | None
    owner: str | None
    size: int
    md5: str
    sha256: str
    app_properties: dict[str, str]
    trashed: bool
    content_path: Path | None
    permissions: list[dict[str, Any]]


@dataclass(frozen=True)
class SessionInfo:
    id: str
    uri: str
    committed: int
    total: int | None
    bytes_received: int
    file_id: str | None
    expired: bool


@dataclass(frozen=True)
class LogEntry:
    method: str
    path: str  # without the query string: session ids stay out of logs
    type: str
    status: int
    query: dict[str, str] = field(default_factory=dict)  # without upload_id, for the same reason


# ---------------------------------------------------------------- faults


@dataclass
class Fault:
    kind: str
    on: frozenset[str]
    remaining: int
    params: dict[str, Any]


class FaultPlan:
    """Faults armed by a test; each fires on the next ``count`` matching requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Fault] = []
        self.fired: list[tuple[str, str]] = []  # (kind, request type), in order

    def add(
        self, kind: str, count: int = 1, *, on: str | Iterable[str] | None = None, **params: Any
    ) -> Fault:
        """Arm ``kind`` for the next ``count`` requests of type ``on`` (see FAULT_KINDS for
        defaults; "any" = every API request except token, discovery and session PUTs).

        Params: server_error ``status`` (503); too_many_requests ``retry_after`` (1);
        storage_quota ``message``; drop_connection ``after_bytes`` (half the body) and
        ``keep_bytes`` (0); short_confirm ``keep_bytes`` (half the chunk, rounded down to
        256 KiB; any count, such as an odd one, that the chunk holds); incomplete_search
        (an answer with ``incompleteSearch: true`` and no files); any kind ``session``
        (upload id or URI) to hit one upload session only.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        targets = {FAULT_KINDS[kind]} if on is None else {on} if isinstance(on, str) else set(on)
        unknown = targets - REQUEST_TYPES - {"any"}
        if unknown:
            raise ValueError(f"unknown request types {sorted(unknown)}")
        fault = Fault(kind, frozenset(targets), count, params)
        with self._lock:
            self._armed.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._armed if f.remaining > 0]

    def take(self, request_type: str, session_id: str | None) -> Fault | None:
        # "any" leaves out session PUTs: google-auth-httplib2 answers a 401 by resending
        # the same, already-read chunk stream, which would hang the client.
        any_ok = request_type not in ("token", "discovery", "chunk", "status")
        with self._lock:
            for fault in self._armed:
                if fault.remaining <= 0:
                    continue
                if request_type not in fault.on and not ("any" in fault.on and any_ok):
                    continue
                wanted = fault.params.get("session")
                if wanted and session_id not in (wanted, _upload_id_of(str(wanted))):
                    continue
                fault.remaining -= 1
                self.fired.append((fault.kind, request_type))
                return fault
        return None


def _upload_id_of(uri_or_id: str) -> str:
    query = parse_qs(urlsplit(uri_or_id).query)
    return query["upload_id"][0] if "upload_id" in query else uri_or_id


def _fault_error(fault: Fault) -> DriveError:
    """The response Drive gives for each error-kind fault."""
    p = fault.params
    if fault.kind == "server_error":
        code = int(p.get("status", 503))
        return DriveError(code, "backendError", "Backend Error")
    if fault.kind == "too_many_requests":
        return DriveError(
            429,
            "rateLimitExceeded",
            "Rate Limit Exceeded",
            domain="usageLimits",
            headers={"Retry-After": str(p.get("retry_after", 1))},
        )
    if fault.kind == "user_rate_limit":
        return DriveError(403, "userRateLimitExceeded", USER_RATE_MESSAGE, domain="usageLimits")
    if fault.kind == "rate_limit":
        return DriveError(403, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
    if fault.kind == "storage_quota":
        return _storage_quota(str(p.get("message", SA_QUOTA_MESSAGE)))
    if fault.kind == "upload_limit":
        return _upload_limit()
    if fault.kind == "auth_error":
        return _auth_error("authError", "Invalid Credentials")
    raise AssertionError(fault.kind)


def _storage_quota(message: str = SA_QUOTA_MESSAGE) -> DriveError:
    return DriveError(403, "storageQuotaExceeded", message, domain="usageLimits")


def _upload_limit() -> DriveError:
    # The 750 GB/day cap is undocumented; this exact message is what rclone's
    # --drive-stop-on-upload-limit keys on (drive.go shouldRetry).
    return DriveError(403, "userRateLimitExceeded", "User rate limit exceeded.", domain="usageLimits")


def _auth_error(reason: str, message: str) -> DriveError:
    return DriveError(
        401,
        reason,
        message,
        location="Authorization",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
    )


# ---------------------------------------------------------------- request plumbing


class _Body:
    """The request body, read incrementally (Content-Length or chunked encoding)."""

    def __init__(self, rfile: BinaryIO, headers: Message) -> None:
        self._rfile = rfile
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self.length: int | None = None if self.chunked else int(headers.get("Content-Length") or 0)
        self._left = self.length or 0
        self._chunk_left = 0
        self._eof = not self.chunked and self._left == 0
        self.consumed = 0

    def read(self, n: int) -> bytes:
        if self._eof or n <= 0:
            return b""
        if self.chunked and self._chunk_left == 0 and not self._next_chunk():
            return b""
        left = self._chunk_left if self.chunked else self._left
        try:
            data = self._rfile.read(min(n, left))
        except OSError as exc:  # reset or timed out mid-body
            raise _ClientGone() from exc
        if not data:
            raise _ClientGone()
        self.consumed += len(data)
        if self.chunked:
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._rfile.readline()  # CRLF after the chunk data
        else:
            self._left -= len(data)
            self._eof = self._left == 0
        return data

    def _next_chunk(self) -> bool:
        line = self._rfile.readline()
        if not line:
            raise _ClientGone()
        self._chunk_left = int(line.split(b";")[0].strip() or b"0", 16)
        if self._chunk_left == 0:
            while self._rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._eof = True
            return False
        return True

    def read_all(self, limit: int = 16 * 1024 * 1024) -> bytes:
        parts, size = [], 0
        while data := self.read(BLOCK):
            size += len(data)
            if size > limit:
                raise DriveError(413, "badRequest", "Request body too large.")
            parts.append(data)
        return b"".join(parts)

    def drain(self) -> None:
        while self.read(BLOCK):
            pass


@dataclass
class _Call:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: _Body
    groups: dict[str, str]
    type: str = "unknown"
    principal: Principal | None = None
    fault: Fault | None = None

    def flag(self, *names: str) -> bool:
        return any(self.query.get(n, "").lower() == "true" for n in names)

    @property
    def all_drives(self) -> bool:
        return self.flag("supportsAllDrives", "supportsTeamDrives")

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal

    def json_body(self) -> dict[str, Any]:
        raw = self.body.read_all()
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise _bad_request("Parse Error", "parseError") from exc
        if not isinstance(obj, dict):
            raise _bad_request("Parse Error", "parseError")
        return obj


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Callable[[_Call], _Response]
    type: Callable[[_Call], str]
    auth: bool = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httplib2 expects
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus delayed
        # ACKs add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        emulator = cast(_Server, self.server).emulator
        try:
            response = emulator.serve(self)
        except _ClientGone:
            self.close_connection = True
            return
        if response.drop:
            self._abort()
            return
        try:
            self._write(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        length = response.stream[2] if response.stream else len(response.body)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if response.stream is None:
            self.wfile.write(response.body)
            return
        path, offset, left = response.stream
        with path.open("rb") as src:
            src.seek(offset)
            while left > 0 and (data := src.read(min(BLOCK, left))):
                self.wfile.write(data)
                left -= len(data)

    def _abort(self) -> None:
        # SO_LINGER 0 makes close() send RST with no FIN first: a FIN would let httplib2
        # mistake the drop for a stale keep-alive and silently resend an exhausted body.
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # the emulator logs each request itself, without query strings


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: DriveEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client dropped its keep-alive connection: nothing to report
        super().handle_error(request, client_address)


# ---------------------------------------------------------------- fields= and q=


def parse_fields(spec: str) -> dict[str, Any]:
    """``"nextPageToken,files(id,name)"`` -> ``{"nextPageToken": None, "files": {...}}``."""
    selection, end = _parse_field_list(spec, 0)
    if end != len(spec):
        raise _invalid_field(spec)
    return selection


def _parse_field_list(spec: str, i: int) -> tuple[dict[str, Any], int]:
    selection: dict[str, Any] = {}
    while i < len(spec) and spec[i] != ")":
        j = i
        while j < len(spec) and spec[j] not in ",()":
            j += 1
        name, sub = spec[i:j].strip(), None
        if j < len(spec) and spec[j] == "(":
            sub, j = _parse_field_list(spec, j + 1)
            if j >= len(spec):
                raise _invalid_field(spec)
            j += 1
        if name:
            _insert_path(selection, name.split("/"), sub)
        i = j + 1 if j < len(spec) and spec[j] == "," else j
    return selection, i


def _insert_path(selection: dict[str, Any], parts: list[str], sub: dict[str, Any] | None) -> None:
    node = selection
    for part in parts[:-1]:
        if part in node and node[part] is None:
            return
        node = node.setdefault(part, {})
    node[parts[-1]] = sub if parts[-1] not in node or sub is None else {**node[parts[-1]], **sub}


def _invalid_field(name: str) -> DriveError:
    return DriveError(400, "invalidParameter", f"Invalid field selection {name}", location="fields")


def project(obj: dict[str, Any], selection: dict[str, Any] | None) -> dict[str, Any]:
    if selection is None or "*" in selection:
        return obj
    out: dict[str, Any] = {}
    for key, sub in selection.items():
        if key not in obj:
            continue  # Drive omits fields that have no value
        value = obj[key]
        if sub is not None and isinstance(value, list):
            value = [project(v, sub) if isinstance(v, dict) else v for v in value]
        elif sub is not None and isinstance(value, dict) and key not in ("appProperties", "properties"):
            value = project(value, sub)
        out[key] = value
    return out


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|=|<|>|[(){}])"
    r"|(?P<word>[A-Za-z_][\w.]*|-?\d+))"
)
_Pred = Callable[[Item], bool]


class QueryParser:
    """Drive's ``q`` language: clauses joined by and/or/not with parentheses."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text.rstrip()):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise _invalid_param("q")
            kind = cast(str, m.lastgroup)
            value = m.group(kind)
            if kind == "str":
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            self.tokens.append((kind, value))
            pos = m.end()
        self.i = 0

    def parse(self) -> _Pred:
        pred = self._or()
        if self.i != len(self.tokens):
            raise _invalid_param("q")
        return pred

    def _peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.tokens):
            return False
        kind, tok = self.tokens[self.i]
        return value is None or (kind != "str" and tok.lower() == value)

    def _next(self, kind: str | None = None, value: str | None = None) -> str:
        if self.i >= len(self.tokens):
            raise _invalid_param("q")
        k, tok = self.tokens[self.i]
        if (kind and k != kind) or (value and (k == "str" or tok.lower() != value)):
            raise _invalid_param("q")
        self.i += 1
        return tok

    def _or(self) -> _Pred:
        preds = [self._and()]
        while self._peek("or"):
            self.i += 1
            preds.append(self._and())
        return preds[0] if len(preds) == 1 else lambda it: any(p(it) for p in preds)

    def _and(self) -> _Pred:
        preds = [self._not()]
        while self._peek("and"):
            self.i += 1
            preds.append(self._not())
        return preds[0] if len(preds) == 1 else lambda it: all(p(it) for p in preds)

    def _not(self) -> _Pred:
        if self._peek("not"):
            self.i += 1
            inner = self._not()
            return lambda it: not inner(it)
        if self._peek("("):
            self.i += 1
            inner = self._or()
            self._next("op", ")")
            return inner
        return self._clause()

    def _clause(self) -> _Pred:
        if self.i >= len(self.tokens):
            raise _invalid_param("q")
        if self.tokens[self.i][0] == "str":
            value = self._next("str")
            self._next("word", "in")
            return _membership(self._next("word"), value)
        name = self._next("word")
        if self._peek("has"):
            self.i += 1
            return self._has(name)
        op = self._next()
        kind, raw = self.tokens[self.i] if self.i < len(self.tokens) else ("", "")
        self.i += 1
        return _comparison(name, op.lower(), raw if kind == "str" else raw.lower(), kind)

    def _has(self, name: str) -> _Pred:
        if name not in ("appProperties", "properties"):
            raise _invalid_param("q")
        self._next("op", "{")
        self._next("word", "key")
        self._next("op", "=")
        key = self._next("str")
        self._next("word", "and")
        self._next("word", "value")
        self._next("op", "=")
        value = self._next("str")
        self._next("op", "}")
        attr = "app_properties" if name == "appProperties" else "properties"
        return lambda it: getattr(it, attr).get(key) == value


def _membership(collection: str, value: str) -> _Pred:
    if collection == "parents":
        return lambda it: value in it.parents
    if collection == "owners":
        return lambda it: it.owner == value
    if collection in ("readers", "writers"):
        return lambda it: it.owner == value or value in it.readers
    raise _invalid_param("q")


def _comparison(name: str, op: str, value: str, kind: str) -> _Pred:
    text_fields: dict[str, Callable[[Item], str]] = {
        "name": lambda it: it.name,
        "mimeType": lambda it: it.mime_type,
        "fullText": lambda it: f"{it.name} {it.description or ''}",
    }
    if name in text_fields and kind == "str":
        get = text_fields[name]
        ops: dict[str, _Pred] = {
            "=": lambda it: get(it) == value,
            "!=": lambda it: get(it) != value,
            "contains": lambda it: value.lower() in get(it).lower(),
        }
        if op in ops and (op == "contains" or name != "fullText"):
            return ops[op]
    if name in ("trashed", "starred") and value in ("true", "false") and op in ("=", "!="):
        want = (value == "true") == (op == "=")
        return lambda it: (it.trashed if name == "trashed" else False) == want
    if name in ("createdTime", "modifiedTime") and kind == "str" and op in ("=", "!=", "<", "<=", ">", ">="):
        try:
            bound = datetime.fromisoformat(value.replace("Z", "+00:00"))
            bound = bound if bound.tzinfo else bound.replace(tzinfo=UTC)
        except ValueError as exc:
            raise _invalid_param("q") from exc
        attr = "created_time" if name == "createdTime" else "modified_time"
        compare = {
            "=": "__eq__",
            "!=": "__ne__",
            "<": "__lt__",
            "<=": "__le__",
            ">": "__gt__",
            ">=": "__ge__",
        }[op]
        return lambda it: bool(
            getattr(datetime.fromisoformat(getattr(it, attr).replace("Z", "+00:00")), compare)(bound)
        )
    raise _invalid_param("q")


# ---------------------------------------------------------------- the emulator


class DriveEmulator:
    """Google Drive v3 over HTTP on 127.0.0.1, for tests and the offline demo.

    Use as a context manager; ``url`` is the API root, ``token_uri`` the OAuth endpoint.
    Access follows Drive: shared-drive items need ``supportsAllDrives=true`` (else 404)
    and drive membership, and the member's role decides (ROLES: a Content manager,
    ``fileOrganizer``, may add and trash but not delete; a Contributor, ``writer``, may add
    but not trash; only a Manager, ``organizer``, may delete); My Drive items are seen by
    their owner and whoever they are shared with, and only the owner may trash or delete
    them; a service account that is not impersonating anybody cannot create anything
    outside a shared drive (403 storageQuotaExceeded). files.list searches the corpus
    asked for (``user``, ``drive`` with ``driveId``, ``allDrives``). Upload-session PUTs need
    no token (the session id is the capability). ``daily_upload_limit`` (bytes per 24 h)
    refuses new uploads once reached, the way Drive applies its 750 GB cap.
    """

    def __init__(
        self,
        storage_dir: str | Path,
        service_account_public_key_pem: bytes | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service_account_email: str | None = None,
        allowed_subjects: Iterable[str] | None = None,
        daily_upload_limit: int | None = None,
        token_lifetime: int = 3600,
        users: UserAccounts | None = None,
    ) -> None:
        self.storage = Path(storage_dir)
        for sub in ("files", "uploads", "tmp"):
            (self.storage / sub).mkdir(parents=True, exist_ok=True)
        self._public_key = _load_public_key(service_account_public_key_pem)
        self.service_account_email = service_account_email
        self.allowed_subjects = None if allowed_subjects is None else set(allowed_subjects)
        self.daily_upload_limit = daily_upload_limit
        self.token_lifetime = token_lifetime
        # Personal accounts (OAuth device flow, refresh tokens): devkit/drive_users.py.
        self.users = users
        # Every access token stops working after this many session PUTs (a token that
        # expires mid-upload); session PUTs that carry a token then need a valid one.
        self.expire_tokens_after_chunks: int | None = None
        self._chunks_seen = 0
        self.faults = FaultPlan()
        self.requests: Counter[str] = Counter()  # by request type
        self.bytes_received = 0  # upload body bytes read off the wire, kept or not
        self.grants: list[Principal] = []  # one per token issued
        self.log: list[LogEntry] = []
        self._lock = threading.RLock()
        self._items: dict[str, Item] = {}
        self._drives: dict[str, SharedDrive] = {}
        self._roots: dict[str, str] = {}  # user email -> My Drive root id
        self._sessions: dict[str, UploadSession] = {}
        self._tokens: dict[str, tuple[Principal, float]] = {}
        self._issued: list[str] = []
        self._generated: set[str] = set()
        self._uploaded: list[tuple[float, int]] = []  # for the daily upload cap
        self._discovery: dict[str, Any] | None = None
        self._server = _Server((host, port), _Handler)
        self._server.emulator = self
        self._thread: threading.Thread | None = None
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self.token_uri = f"{self.url}/token"
        self.discovery_url = f"{self.url}/discovery/v1/apis/{{api}}/{{apiVersion}}/rest"
        self._routes = self._build_routes()

    # -- lifecycle

    def start(self) -> DriveEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="drive-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> DriveEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up helpers for tests

    def create_shared_drive(
        self, name: str, *, members: Iterable[str] | dict[str, str] | None = None, drive_id: str | None = None
    ) -> str:
        """A shared drive; its id is also the id of its root folder, as in Drive.
        ``members`` maps email to role (see ROLES); a plain list makes each an organizer."""
        drive_id = drive_id or "0A" + secrets.token_urlsafe(12)
        roles = (
            None
            if members is None
            else (dict(members) if isinstance(members, dict) else dict.fromkeys(members, "organizer"))
        )
        if roles and set(roles.values()) - set(ROLES):
            raise ValueError(f"unknown roles {sorted(set(roles.values()) - set(ROLES))}")
        with self._lock:
            self._drives[drive_id] = SharedDrive(drive_id, name, roles)
            self._items[drive_id] = Item(drive_id, name, FOLDER, [], drive_id, None, is_root=True)
        return drive_id

    def create_folder(
        self,
        name: str,
        parent: str | None = None,
        *,
        owner: str = "owner@example.com",
        shared_with: Iterable[str] = (),
        app_properties: dict[str, str] | None = None,
    ) -> str:
        """A folder in a shared drive (``parent`` is in one) or in ``owner``'s My Drive."""
        return self._seed(name, FOLDER, parent, owner, shared_with, app_properties, None)

    def add_file(
        self,
        name: str,
        content: bytes,
        parent: str | None = None,
        *,
        owner: str = "owner@example.com",
        mime_type: str = "application/octet-stream",
        app_properties: dict[str, str] | None = None,
    ) -> str:
        return self._seed(name, mime_type, parent, owner, (), app_properties, content)

    def _seed(
        self,
        name: str,
        mime_type: str,
        parent: str | None,
        owner: str,
        shared_with: Iterable[str],
        app_properties: dict[str, str] | None,
        content: bytes | None,
    ) -> str:
        with self._lock:
            parent_item = self._items[parent] if parent else self._items[self._root_of(owner)]
            item = Item(
                _new_file_id(),
                name,
                mime_type,
                [parent_item.id],
                parent_item.drive_id,
                None if parent_item.drive_id else owner,
                app_properties=dict(app_properties or {}),
                readers=set(shared_with),
            )
            if content is not None:
                item.content_path = self.storage / "files" / item.id
                item.content_path.write_bytes(content)
                item.size, item.md5 = len(content), hashlib.md5(content).hexdigest()
                item.sha256 = hashlib.sha256(content).hexdigest()
            self._items[item.id] = item
            return item.id

    def trash(self, file_id: str) -> None:
        """As if a person moved the item to Drive's trash."""
        with self._lock:
            self._items[file_id].trashed = True

    def replace_content(self, file_id: str, content: bytes) -> None:
        """As if the file's bytes changed in Drive (a new version, or damage): Drive's
        size and md5Checksum follow the new content."""
        with self._lock:
            item = self._items[file_id]
            assert item.content_path is not None, "only files have content"
            item.content_path.write_bytes(content)
            item.size, item.md5 = len(content), hashlib.md5(content).hexdigest()
            item.sha256 = hashlib.sha256(content).hexdigest()

    def remove(self, file_id: str) -> None:
        """As if a person deleted the item (and what is in it) for good."""
        with self._lock:
            self._remove(self._items[file_id])

    def _remove(self, item: Item) -> None:
        doomed = [item]
        while doomed:
            current = doomed.pop()
            self._items.pop(current.id, None)
            if current.content_path:
                current.content_path.unlink(missing_ok=True)
            doomed.extend(i for i in self._items.values() if current.id in i.parents)

    # -- observability

    def files(self) -> list[FileInfo]:
        with self._lock:
            return [_info(i) for i in self._items.values() if not i.is_root]

    def file(self, file_id: str) -> FileInfo:
        with self._lock:
            return _info(self._items[file_id])

    def file_content(self, file_id: str) -> bytes:
        path = self.file(file_id).content_path
        return path.read_bytes() if path else b""

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            return [_session_info(s) for s in self._sessions.values()]

    def session(self, uri_or_id: str) -> SessionInfo:
        with self._lock:
            return _session_info(self._sessions[_upload_id_of(uri_or_id)])

    def expire_session(self, uri_or_id: str) -> None:
        with self._lock:
            self._sessions[_upload_id_of(uri_or_id)].expired = True

    def issued_tokens(self) -> list[str]:
        """Every access token handed out (for tests that look for leaks)."""
        with self._lock:
            return list(self._issued)

    def revoke_tokens(self) -> None:
        """Every issued access token becomes invalid (clients must refresh)."""
        with self._lock:
            self._tokens.clear()

    def discovery_document(self) -> dict[str, Any]:
        """The bundled drive v3 discovery doc with rootUrl pointing here."""
        if self._discovery is None:
            from googleapiclient.discovery_cache import get_static_doc

            doc = json.loads(get_static_doc("drive", "v3") or "{}")
            doc["rootUrl"] = self.url + "/"
            doc["baseUrl"] = self.url + "/drive/v3/"
            doc.pop("mtlsRootUrl", None)
            self._discovery = doc
        return self._discovery

    # -- dispatch

    def _build_routes(self) -> list[_Route]:
        def fixed(name: str) -> Callable[[_Call], str]:
            return lambda call: name

        def r(
            method: str,
            path: str,
            handler: Callable[[_Call], _Response],
            kind: Callable[[_Call], str],
            auth: bool = True,
        ) -> _Route:
            return _Route(method, re.compile(path + "$"), handler, kind, auth)

        file_path = "/drive/v3/files/(?P<id>[^/]+)"
        upload_path = "/upload/drive/v3/files(?:/(?P<id>[^/]+))?"
        return [
            r("POST", "/token", self._token, fixed("token"), auth=False),
            r("POST", "/device/code", self._device_code, fixed("token"), auth=False),
            r("GET", "/o/oauth2/v2/auth", self._consent, fixed("consent"), auth=False),
            r(
                "GET",
                "/discovery/v1/apis/drive/v3/rest",
                self._serve_discovery,
                fixed("discovery"),
                auth=False,
            ),
            r("GET", "/drive/v3/files/generateIds", self._generate_ids, fixed("generate_ids")),
            r("GET", "/drive/v3/files", self._list, fixed("list")),
            r("POST", "/drive/v3/files", self._create, fixed("create")),
            r("GET", file_path, self._get, lambda c: "media" if c.query.get("alt") == "media" else "get"),
            r("PATCH", file_path, self._update_metadata, fixed("update")),
            r("DELETE", file_path, self._delete, fixed("delete")),
            r("POST", file_path + "/permissions", self._create_permission, fixed("permissions")),
            r("GET", file_path + "/permissions", self._list_permissions, fixed("permissions")),
            r("GET", "/drive/v3/drives/(?P<id>[^/]+)", self._get_drive, fixed("drives_get")),
            r("GET", "/drive/v3/about", self._about, fixed("about")),
            r("PUT", upload_path, self._session_put, _session_request_type, auth=False),
            r("POST", upload_path, self._upload, _upload_request_type),
            r("PATCH", upload_path, self._upload, _upload_request_type),
        ]

    def serve(self, handler: BaseHTTPRequestHandler) -> _Response:
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        call = _Call(
            handler.command,
            parts.path,
            query,
            handler.headers,
            _Body(cast(BinaryIO, handler.rfile), handler.headers),
            {},
        )
        try:
            response = self._dispatch(call)
        except DriveError as exc:
            response = exc.response()
        except _OAuthError as exc:
            response = _Response.json(exc.status, {"error": exc.error, "error_description": exc.description})
        except _ClientGone:
            raise
        except Exception as exc:  # an emulator bug must surface as a 500, not a hang
            log.exception("drive emulator: %s %s failed", call.method, call.path)
            response = DriveError(500, "internalError", f"Emulator error: {exc}").response()
        if not response.drop:
            call.body.drain()  # keep-alive needs the whole body read before answering
        with self._lock:
            query = {k: v for k, v in call.query.items() if k != "upload_id"}
            self.log.append(LogEntry(call.method, call.path, call.type, response.status, query))
        log.debug("%s %s -> %s (%s)", call.method, call.path, response.status, call.type)
        return response

    def _dispatch(self, call: _Call) -> _Response:
        route = self._match(call)
        call.type = route.type(call) if route else "unknown"
        with self._lock:
            self.requests[call.type] += 1
        if route is None:
            raise DriveError(404, "notFound", f"Not Found: {call.method} {call.path}")
        if route.auth:
            call.principal = self._authenticate(call)
        elif call.type in ("chunk", "status") and self.expire_tokens_after_chunks is not None:
            self._session_token(call)
        call.fault = self.faults.take(call.type, call.query.get("upload_id"))
        if call.fault and call.fault.kind not in (
            "drop_connection",
            "short_confirm",
            "session_expired",
            "incomplete_search",
        ):
            call.body.drain()
            raise _fault_error(call.fault)
        if call.fault and call.fault.kind == "session_expired":
            return self._expire_now(call)
        if call.fault and call.fault.kind == "drop_connection" and call.type != "chunk":
            return self._drop_after(
                call, int(call.fault.params.get("after_bytes", (call.body.length or 0) // 2))
            )
        return route.handler(call)

    def _match(self, call: _Call) -> _Route | None:
        for route in self._routes:
            m = route.pattern.match(call.path)
            if m and route.method == call.method:
                call.groups = {k: v for k, v in m.groupdict().items() if v is not None}
                return route
        return None

    def _drop_after(self, call: _Call, after: int) -> _Response:
        while after > 0 and (data := call.body.read(min(BLOCK, after))):
            after -= len(data)
        return _Response(0, drop=True)

    def _expire_now(self, call: _Call) -> _Response:
        upload_id = call.query.get("upload_id")
        with self._lock:
            if upload_id in self._sessions:
                self._sessions[upload_id].expired = True
        raise DriveError(404, "notFound", "Upload session expired or not found.")

    # -- OAuth

    def _session_token(self, call: _Call) -> None:
        """A session PUT with a token checks it; the token expires after N chunks."""
        if call.headers.get("Authorization"):
            self._authenticate(call)
        with self._lock:
            self._chunks_seen += 1
            if self._chunks_seen == self.expire_tokens_after_chunks:
                self._tokens.clear()

    def _device_code(self, call: _Call) -> _Response:
        form = {k: v[-1] for k, v in parse_qs(call.body.read_all().decode()).items()}
        if self.users is None:
            raise _OAuthError(401, "invalid_client", "The OAuth client was not found.")
        try:
            return _Response.json(200, self.users.device_code(form))
        except OAuthRefusal as e:
            raise _OAuthError(e.status, e.error, e.description) from None

    def _consent(self, call: _Call) -> _Response:
        """The consent page: the browser is redirected back to the loopback address."""
        if self.users is None:
            raise _OAuthError(401, "invalid_client", "The OAuth client was not found.")
        try:
            return _Response(302, headers={"Location": self.users.consent(call.query)})
        except OAuthRefusal as e:
            raise _OAuthError(e.status, e.error, e.description) from None

    def _user_token(self, form: dict[str, str]) -> _Response:
        if self.users is None:
            raise _OAuthError(401, "invalid_client", "The OAuth client was not found.")
        try:
            grant: Grant = (
                self.users.device_grant(form)
                if form["grant_type"] == DEVICE_GRANT
                else self.users.code_grant(form)
                if form["grant_type"] == CODE_GRANT
                else self.users.refresh_grant(form)
            )
        except OAuthRefusal as e:
            raise _OAuthError(e.status, e.error, e.description) from None
        principal = Principal(grant.client_id, grant.email, grant.scopes)
        token = "ya29.emu-" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (principal, time.time() + self.token_lifetime)
            self._issued.append(token)
            self.grants.append(principal)
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
            "scope": " ".join(sorted(grant.scopes)),
        }
        if grant.refresh_token:
            body["refresh_token"] = grant.refresh_token
        return _Response.json(200, body)

    def _token(self, call: _Call) -> _Response:
        form = {k: v[-1] for k, v in parse_qs(call.body.read_all().decode()).items()}
        if form.get("grant_type") in (DEVICE_GRANT, CODE_GRANT, "refresh_token"):
            return self._user_token(form)
        if form.get("grant_type") != JWT_BEARER:
            raise _OAuthError(
                400, "unsupported_grant_type", "Invalid grant_type: " + form.get("grant_type", "")
            )
        claims = self._verify_jwt(form.get("assertion", ""))
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            raise _OAuthError(400, "invalid_scope", "Empty or missing scope not allowed.")
        subject = claims.get("sub")
        if subject is not None and self.allowed_subjects is not None and subject not in self.allowed_subjects:
            raise _OAuthError(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this "
                "method, or client not authorized for any of the scopes "
                "requested.",
            )
        principal = Principal(str(claims["iss"]), subject, scopes)
        token = "ya29.emu-" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (principal, time.time() + self.token_lifetime)
            self._issued.append(token)
            self.grants.append(principal)
        return _Response.json(
            200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    def _verify_jwt(self, assertion: str) -> dict[str, Any]:
        parts = assertion.split(".")
        if len(parts) != 3:
            raise _OAuthError(400, "invalid_grant", "Invalid JWT: malformed assertion.")
        try:
            header = json.loads(_b64url(parts[0]))
            claims = json.loads(_b64url(parts[1]))
            signature = _b64url(parts[2])
        except ValueError as exc:
            raise _OAuthError(400, "invalid_grant", "Invalid JWT: undecodable.") from exc
        if header.get("alg") != "RS256":
            raise _OAuthError(400, "invalid_grant", "Invalid JWT: alg must be RS256.")
        try:
            self._public_key.verify(
                signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature as exc:
            raise _OAuthError(400, "invalid_grant", "Invalid JWT Signature.") from exc
        self._check_claims(claims)
        return cast(dict[str, Any], claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if claims.get("aud") not in GOOGLE_AUDIENCES | {self.token_uri}:
            raise _OAuthError(400, "invalid_grant", "Invalid JWT: Failed audience check.")
        if self.service_account_email and claims.get("iss") != self.service_account_email:
            raise _OAuthError(400, "invalid_grant", "Invalid grant: account not found")
        now, iat, exp = time.time(), claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int | float)
            or not isinstance(exp, int | float)
            or exp <= now
            or iat > now + 300
            or exp - iat > 3600
            or "iss" not in claims
        ):
            raise _OAuthError(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and "
                "in a reasonable timeframe. Check your iat and exp values in the "
                "JWT claim.",
            )

    def _authenticate(self, call: _Call) -> Principal:
        header = call.headers.get("Authorization") or ""
        if not header.startswith("Bearer "):
            raise _auth_error("required", "Login Required.")
        with self._lock:
            entry = self._tokens.get(header[7:].strip())
        if entry is None or entry[1] < time.time():
            raise _auth_error("authError", "Invalid Credentials")
        principal = entry[0]
        write = call.method != "GET"
        if not principal.scopes & (WRITE_SCOPES if write else READ_SCOPES):
            raise DriveError(
                403, "insufficientPermissions", "Request had insufficient authentication scopes."
            )
        return principal

    # -- access rules

    def _root_of(self, email: str) -> str:
        with self._lock:
            if email not in self._roots:
                root = Item(
                    "0A" + secrets.token_urlsafe(12), "My Drive", FOLDER, [], None, email, is_root=True
                )
                self._items[root.id] = root
                self._roots[email] = root.id
            return self._roots[email]

    def _visible(self, who: Principal, item: Item) -> bool:
        if item.drive_id is not None:
            return self._drives[item.drive_id].role(who.email) is not None
        node: Item | None = item
        while node is not None:
            if node.owner == who.email or who.email in node.readers:
                return True
            node = self._items.get(node.parents[0]) if node.parents else None
        return False

    def _lookup(self, call: _Call, file_id: str) -> Item:
        return self._find(call.who, call.all_drives, file_id)

    def _find(self, who: Principal, all_drives: bool, file_id: str) -> Item:
        """The item as this caller sees it; 404 like Drive when hidden, or when it sits in
        a shared drive and the request lacks supportsAllDrives=true."""
        with self._lock:
            if file_id == "root":
                file_id = self._root_of(who.email)
            item = self._items.get(file_id)
            if item is None or not self._visible(who, item) or (item.drive_id is not None and not all_drives):
                raise _not_found(file_id)
            return item

    def _placement(
        self, who: Principal, all_drives: bool, metadata: dict[str, Any]
    ) -> tuple[str, str | None, str | None]:
        """(parent id, shared drive id, owner) for a new item, or Drive's refusal."""
        parents = metadata.get("parents") or ["root"]
        if not isinstance(parents, list) or len(parents) > 1:
            raise DriveError(403, "cannotAddParent", "Increasing the number of parents is not allowed.")
        parent = self._find(who, all_drives, str(parents[0]))
        if not parent.is_folder:
            raise _bad_request("The specified parent is not a folder.")
        self._require(who, parent, CAN_ADD)
        if parent.drive_id is None and who.is_service_account:
            raise _storage_quota()  # a service account cannot own My Drive items
        return parent.id, parent.drive_id, None if parent.drive_id else who.email

    def _require(self, who: Principal, item: Item, roles: set[str], *, owner_only: bool = False) -> None:
        """403 unless the caller may do this: in a shared drive its role must be one of
        ``roles``; in a My Drive, with ``owner_only`` (trash, delete), it must own the item
        ("Only the owner may trash a file")."""
        if item.drive_id is not None:
            allowed = self._drives[item.drive_id].role(who.email) in roles
        else:
            allowed = not owner_only or item.owner == who.email
        if not allowed:
            raise DriveError(
                403,
                "insufficientFilePermissions",
                "The user does not have sufficient permissions for this file.",
            )

    def _check_new_id(self, metadata: dict[str, Any]) -> str:
        file_id = metadata.get("id")
        if file_id is None:
            return _new_file_id()
        with self._lock:
            if file_id in self._items:
                raise DriveError(409, "duplicate", "A file already exists with the provided ID.")
            if file_id not in self._generated:
                raise _bad_request("The provided file ID is not usable.", "invalid")
        return str(file_id)

    def _check_upload_cap(self) -> None:
        if self.daily_upload_limit is None:
            return
        with self._lock:
            cutoff = time.time() - 86400
            self._uploaded = [(t, n) for t, n in self._uploaded if t >= cutoff]
            if sum(n for _, n in self._uploaded) >= self.daily_upload_limit:
                raise _upload_limit()  # only new uploads are refused, as Drive does

    # -- representation

    def _file_json(self, item: Item) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "drive#file",
            "id": item.id,
            "name": item.name,
            "mimeType": item.mime_type,
            "parents": list(item.parents),
            "trashed": item.trashed,
            "createdTime": item.created_time,
            "modifiedTime": item.modified_time,
        }
        if item.is_folder:
            out["webViewLink"] = f"https://drive.google.com/drive/folders/{item.id}"
        else:
            out.update(
                size=str(item.size),
                md5Checksum=item.md5,
                sha256Checksum=item.sha256,
                webViewLink=f"https://drive.google.com/file/d/{item.id}/view?usp=drivesdk",
                webContentLink=f"https://drive.google.com/uc?id={item.id}&export=download",
            )
        if item.drive_id:
            out["driveId"] = item.drive_id
        elif item.owner:
            out["owners"] = [{"kind": "drive#user", "emailAddress": item.owner}]
        if item.app_properties:
            out["appProperties"] = dict(item.app_properties)
        if item.properties:
            out["properties"] = dict(item.properties)
        if item.description is not None:
            out["description"] = item.description
        return out

    def _selection(
        self, fields: str | None, schema: str, default: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        if fields is None:
            return default
        selection = parse_fields(fields)
        self._validate_fields(selection, schema)
        return selection

    def _validate_fields(self, selection: dict[str, Any], schema: str) -> None:
        props = self.discovery_document()["schemas"][schema]["properties"]
        for key, sub in selection.items():
            if key == "*":
                continue
            if key not in props:
                raise _invalid_field(key)
            ref = props[key].get("$ref") or props[key].get("items", {}).get("$ref")
            if sub is not None and ref:
                self._validate_fields(sub, ref)

    def _file_response(self, item: Item, fields: str | None, status: int = 200) -> _Response:
        selection = self._selection(fields, "File", dict.fromkeys(("kind", "id", "name", "mimeType")))
        return _Response.json(status, project(self._file_json(item), selection))

    # -- files.*

    def _serve_discovery(self, call: _Call) -> _Response:
        return _Response.json(200, self.discovery_document())

    def _generate_ids(self, call: _Call) -> _Response:
        count = _int_param(call, "count", 10)
        if not 1 <= count <= 1000:
            raise _invalid_param("count")
        ids = [_new_file_id() for _ in range(count)]
        with self._lock:
            self._generated.update(ids)
        return _Response.json(
            200, {"kind": "drive#generatedIds", "space": call.query.get("space", "drive"), "ids": ids}
        )

    def _get(self, call: _Call) -> _Response:
        item = self._lookup(call, call.groups["id"])
        if call.query.get("alt") != "media":
            return self._file_response(item, call.query.get("fields"))
        if item.is_folder or item.content_path is None:
            raise DriveError(
                403,
                "fileNotDownloadable",
                "Only files with binary content can be downloaded.",
                location="alt",
            )
        return _media_response(item, call.headers.get("Range"))

    def _create(self, call: _Call) -> _Response:
        metadata = call.json_body()
        parent, drive_id, owner = self._placement(call.who, call.all_drives, metadata)
        file_id = self._check_new_id(metadata)
        item = self._new_item(
            file_id, metadata, parent, drive_id, owner, metadata.get("mimeType") or "application/octet-stream"
        )
        if not item.is_folder:
            item.content_path = self.storage / "files" / file_id
            item.content_path.touch()
            item.md5, item.sha256 = hashlib.md5().hexdigest(), hashlib.sha256().hexdigest()
        with self._lock:
            self._items[file_id] = item
        return self._file_response(item, call.query.get("fields"))

    def _new_item(
        self,
        file_id: str,
        metadata: dict[str, Any],
        parent: str,
        drive_id: str | None,
        owner: str | None,
        mime_type: str,
    ) -> Item:
        return Item(
            file_id,
            str(metadata.get("name") or "Untitled"),
            mime_type,
            [parent],
            drive_id,
            owner,
            app_properties=_props(metadata.get("appProperties")),
            properties=_props(metadata.get("properties")),
            description=metadata.get("description"),
        )

    def _update_metadata(self, call: _Call) -> _Response:
        item = self._lookup(call, call.groups["id"])
        metadata = call.json_body()
        self._require(call.who, item, CAN_ADD)
        if "trashed" in metadata and bool(metadata["trashed"]) != item.trashed:
            self._require(call.who, item, CAN_TRASH, owner_only=True)
        self._apply_metadata(item, metadata)
        self._move(call, item)
        return self._file_response(item, call.query.get("fields"))

    def _apply_metadata(self, item: Item, metadata: dict[str, Any]) -> None:
        with self._lock:
            if "name" in metadata:
                item.name = str(metadata["name"])
            if "mimeType" in metadata and not item.is_folder:
                item.mime_type = str(metadata["mimeType"])
            if "description" in metadata:
                item.description = metadata["description"]
            if "trashed" in metadata:
                item.trashed = bool(metadata["trashed"])
            for key, attr in (("appProperties", "app_properties"), ("properties", "properties")):
                for k, v in (metadata.get(key) or {}).items():
                    if v is None:  # null deletes a property, as in Drive
                        getattr(item, attr).pop(k, None)
                    else:
                        getattr(item, attr)[k] = str(v)
            item.modified_time = _now_rfc3339()

    def _move(self, call: _Call, item: Item) -> None:
        add = [p for p in call.query.get("addParents", "").split(",") if p]
        remove = [p for p in call.query.get("removeParents", "").split(",") if p]
        if not add and not remove:
            return
        parents = [p for p in item.parents if p not in remove]
        for parent_id in add:
            parent = self._lookup(call, parent_id)
            if parent.drive_id is None and item.drive_id is None and parent.id not in parents:
                parents.append(parent.id)
            elif parent.drive_id is not None:
                item.drive_id, parents = parent.drive_id, [parent.id]
        if len(parents) != 1:
            raise DriveError(403, "cannotAddParent", "Increasing the number of parents is not allowed.")
        with self._lock:
            item.parents = parents

    def _delete(self, call: _Call) -> _Response:
        item = self._lookup(call, call.groups["id"])
        self._require(call.who, item, CAN_DELETE, owner_only=True)
        with self._lock:
            self._remove(item)
        return _Response(204)

    def _list(self, call: _Call) -> _Response:
        predicate = QueryParser(call.query["q"]).parse() if call.query.get("q") else None
        corpus = self._corpus(call)
        with self._lock:
            matches = [
                i
                for i in self._items.values()
                if self._listable(call.who, corpus, i) and (predicate is None or predicate(i))
            ]
        incomplete = call.fault is not None and call.fault.kind == "incomplete_search"
        if incomplete:
            matches = []  # "some search results might be missing": here, all of them
        matches = _order(matches, call.query.get("orderBy"))
        size = _int_param(call, "pageSize", 100)
        if not 1 <= size <= 1000:
            raise _invalid_param("pageSize")
        start = _page_offset(call.query.get("pageToken"))
        page = matches[start : start + size]
        body: dict[str, Any] = {
            "kind": "drive#fileList",
            "incompleteSearch": incomplete,
            "files": [self._file_json(i) for i in page],
        }
        if start + size < len(matches):
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        default = {
            "kind": None,
            "incompleteSearch": None,
            "nextPageToken": None,
            "files": dict.fromkeys(("kind", "id", "name", "mimeType")),
        }
        selection = self._selection(call.query.get("fields"), "FileList", default)
        return _Response.json(200, project(body, selection))

    def _corpus(self, call: _Call) -> tuple[bool, set[str]]:
        """(My Drive items?, shared drives searched) for files.list's corpora and driveId:
        ``user`` (the default) is what the caller owns or was shared, ``drive`` one shared
        drive, ``allDrives`` both; shared-drive items need includeItemsFromAllDrives."""
        corpora = call.query.get("corpora", "user")
        drive_id = call.query.get("driveId")
        if corpora not in ("user", "domain", "drive", "allDrives"):
            raise _invalid_param("corpora")
        if (corpora == "drive") != bool(drive_id):
            raise _bad_request(
                "The driveId parameter must be specified if and only if corpora is set to drive.", "invalid"
            )
        included = call.all_drives and call.flag("includeItemsFromAllDrives", "includeTeamDriveItems")
        if corpora in ("drive", "allDrives") and not included:
            raise _bad_request(
                f"The includeItemsFromAllDrives parameter must be set to true when corpora is {corpora}.",
                "invalid",
            )
        if corpora == "drive":
            drive = self._drives.get(str(drive_id))
            if drive is None or drive.role(call.who.email) is None:
                raise DriveError(404, "notFound", f"Shared drive not found: {drive_id}", location="driveId")
            return False, {drive.id}
        if corpora == "allDrives":
            return True, {d.id for d in self._drives.values() if d.role(call.who.email)}
        return True, set()

    def _listable(self, who: Principal, corpus: tuple[bool, set[str]], item: Item) -> bool:
        if item.is_root or not self._visible(who, item):
            return False
        my_drive, drives = corpus
        return my_drive if item.drive_id is None else item.drive_id in drives

    def _create_permission(self, call: _Call) -> _Response:
        item = self._lookup(call, call.groups["id"])
        body = call.json_body()
        self._require(call.who, item, CAN_ADD)
        kind, role = body.get("type"), body.get("role")
        if kind not in ("user", "group", "domain", "anyone"):
            raise _bad_request("The permission type field is required.", "required")
        if role not in ("owner", "organizer", "fileOrganizer", "writer", "commenter", "reader"):
            raise _bad_request("The permission role field is required.", "required")
        if kind in ("user", "group") and not body.get("emailAddress"):
            raise _bad_request("The permission emailAddress field is required.", "required")
        perm: dict[str, Any] = {
            "kind": "drive#permission",
            "type": kind,
            "role": role,
            "id": "anyoneWithLink" if kind == "anyone" else str(secrets.randbelow(10**20)),
        }
        for key in ("emailAddress", "domain"):
            if body.get(key):
                perm[key] = body[key]
        if kind in ("domain", "anyone"):
            perm["allowFileDiscovery"] = bool(body.get("allowFileDiscovery", False))
        with self._lock:
            item.permissions.append(perm)
            if kind == "user":
                item.readers.add(str(body["emailAddress"]))
        selection = self._selection(call.query.get("fields"), "Permission", None)
        return _Response.json(200, project(perm, selection))

    def _list_permissions(self, call: _Call) -> _Response:
        item = self._lookup(call, call.groups["id"])
        return _Response.json(200, {"kind": "drive#permissionList", "permissions": list(item.permissions)})

    def _get_drive(self, call: _Call) -> _Response:
        drive = self._drives.get(call.groups["id"])
        if drive is None or drive.role(call.who.email) is None:
            raise DriveError(
                404, "notFound", f"Shared drive not found: {call.groups['id']}", location="driveId"
            )
        body = {"kind": "drive#drive", "id": drive.id, "name": drive.name}
        selection = self._selection(call.query.get("fields"), "Drive", None)
        return _Response.json(200, project(body, selection))

    def _about(self, call: _Call) -> _Response:
        if not call.query.get("fields"):  # about.get is one of the methods that insist
            raise DriveError(
                400, "required", "The 'fields' parameter is required for this method.", location="fields"
            )
        user = {
            "kind": "drive#user",
            "emailAddress": call.who.email,
            "me": True,
            "displayName": call.who.email.split("@")[0],
        }
        body: dict[str, Any] = {"kind": "drive#about", "user": user}
        if not call.who.is_service_account and self.users is not None:
            with self._lock:
                used = sum(i.size for i in self._items.values() if i.owner == call.who.email)
                trashed = sum(i.size for i in self._items.values() if i.owner == call.who.email and i.trashed)
            body["storageQuota"] = {
                "limit": str(self.users.limit_of(call.who.email)),
                "usage": str(used),
                "usageInDrive": str(used),
                "usageInDriveTrash": str(trashed),
            }
        return _Response.json(200, project(body, self._selection(call.query["fields"], "About", None)))

    # -- uploads: initiation, multipart, simple

    def _upload(self, call: _Call) -> _Response:
        upload_type = call.query.get("uploadType")
        if call.method == "POST" and "upload_id" in call.query:
            return self._session_put(call)  # rclone sends chunks with POST
        if upload_type == "resumable":
            return self._initiate(call)
        if upload_type in ("multipart", "media"):
            return self._one_shot(call, upload_type)
        raise _invalid_param("uploadType")

    def _upload_target(
        self, call: _Call, metadata: dict[str, Any]
    ) -> tuple[str | None, str, str | None, str | None]:
        """(target file for update, parent, drive id, owner), checked like Drive does."""
        if "id" in call.groups:
            target = self._lookup(call, call.groups["id"])
            self._require(call.who, target, CAN_ADD)
            return target.id, target.parents[0], target.drive_id, target.owner
        parent, drive_id, owner = self._placement(call.who, call.all_drives, metadata)
        return None, parent, drive_id, owner

    def _initiate(self, call: _Call) -> _Response:
        metadata = call.json_body()
        target, _, _, _ = self._upload_target(call, metadata)
        if target is None and metadata.get("id") is not None:
            self._check_new_id(metadata)
        self._check_upload_cap()
        self._selection(call.query.get("fields"), "File", None)  # a bad fields= fails now
        length = call.headers.get("X-Upload-Content-Length")
        if length is not None and not length.strip().isdigit():
            raise _bad_request("Invalid X-Upload-Content-Length header.")
        upload_id = "ADPyc-" + secrets.token_urlsafe(24)
        params = {**{k: v for k, v in call.query.items() if k != "upload_id"}, "upload_id": upload_id}
        uri = f"{self.url}{call.path}?{urlencode(params)}"
        session = UploadSession(
            upload_id,
            uri,
            call.who,
            metadata,
            call.query.get("fields"),
            call.all_drives,
            str(
                metadata.get("mimeType")
                or call.headers.get("X-Upload-Content-Type")
                or "application/octet-stream"
            ),
            int(length) if length else None,
            self.storage / "uploads" / upload_id,
            target,
        )
        session.path.touch()
        with self._lock:
            self._sessions[upload_id] = session
        return _Response(200, headers={"Location": uri, "X-GUploader-UploadID": upload_id})

    def _one_shot(self, call: _Call, upload_type: str) -> _Response:
        spool = self.storage / "tmp" / secrets.token_hex(8)
        try:
            with spool.open("wb") as out:
                self._copy_body(call.body, out)
            if upload_type == "media":
                metadata: dict[str, Any] = {}
                mime = call.headers.get("Content-Type") or "application/octet-stream"
                start, end = 0, spool.stat().st_size
            else:
                metadata, mime, start, end = _split_multipart(spool, call.headers)
            target, parent, drive_id, owner = self._upload_target(call, metadata)
            if target is None:
                self._check_upload_cap()
            final = self.storage / "tmp" / secrets.token_hex(8)
            with spool.open("rb") as src, final.open("wb") as dst:
                md5, sha, size = _copy_range(src, dst, start, end)
            session = UploadSession(
                "",
                "",
                call.who,
                metadata,
                call.query.get("fields"),
                call.all_drives,
                str(metadata.get("mimeType") or mime),
                size,
                final,
                target,
                committed=size,
                md5=md5,
                sha256=sha,
            )
            try:
                return self._finish(session)
            finally:
                final.unlink(missing_ok=True)  # already moved into place unless refused
        finally:
            spool.unlink(missing_ok=True)

    def _copy_body(self, body: _Body, out: BinaryIO) -> None:
        while data := body.read(BLOCK):
            out.write(data)
            with self._lock:
                self.bytes_received += len(data)

    # -- uploads: the resumable session

    def _session_put(self, call: _Call) -> _Response:
        with self._lock:
            session = self._sessions.get(call.query.get("upload_id", ""))
        if session is None or session.expired:
            raise DriveError(404, "notFound", "Upload session expired or not found.")
        with session.lock:
            if session.file_id is not None:  # already complete: answer like a status query
                return self._file_response(self._items[session.file_id], session.fields)
            content_range = call.headers.get("Content-Range")
            if content_range is None:  # the whole content in this one request
                return self._receive(call, session, 0, call.body.length, call.body.length)
            start, end, total = _parse_content_range(content_range)
            if start is None or end is None:
                self._set_total(session, total)
                return self._status(session)
            return self._receive(call, session, start, end - start + 1, total)

    def _set_total(self, session: UploadSession, total: int | None) -> None:
        if total is not None and session.total is not None and total != session.total:
            raise _bad_request("Content-Range total does not match the declared length.")
        if total is not None:
            session.total = total

    def _status(self, session: UploadSession) -> _Response:
        if session.total is not None and session.committed == session.total:
            return self._finish(session)  # "bytes */N" finishes an upload that ends on a chunk
        return _resume_incomplete(session.committed)

    def _receive(
        self, call: _Call, session: UploadSession, start: int, length: int | None, total: int | None
    ) -> _Response:
        """Store bytes [start, start+length) (length None: until the body ends)."""
        self._set_total(session, total)
        if call.body.length is not None and length is not None and call.body.length != length:
            raise _bad_request("Content-Length does not match the Content-Range header.")
        if start > session.committed:
            raise _bad_request(
                f"Invalid request. The upload offset is {start} byte(s), which "
                f"exceeds the {session.committed} byte(s) already uploaded."
            )
        if length is not None and session.total is not None and start + length > session.total:
            raise _bad_request("Content-Range goes past the declared length.")
        final = length is None or (session.total is not None and start + length == session.total)
        # Drive's guide: every chunk but the last is a multiple of 256 KiB long, wherever
        # the previous 308 left off (so after an odd acknowledgement the chunks shift).
        if not final and length is not None and length % GRANULARITY:
            raise _bad_request(
                f"Invalid request. The chunk size must be a multiple of "
                f"{GRANULARITY} bytes, except for the final chunk."
            )
        skip = session.committed - start  # a resend may overlap what is already stored
        if self._store_chunk(call, session, skip, length) is None:
            return _Response(0, drop=True)
        if length is None:
            session.total = session.committed
        if final and session.committed == session.total:
            return self._finish(session)
        return _resume_incomplete(session.committed)

    def _store_chunk(self, call: _Call, session: UploadSession, skip: int, length: int | None) -> int | None:
        """Append the body (after ``skip`` bytes) to the session; None when dropping.

        A fault decides up front how much is kept, so the running hashes only ever see
        the bytes that end up committed."""
        fault = call.fault
        keep = -1 if length is None else length - skip  # -1: everything
        drop_after: int | None = None
        if fault and fault.kind == "short_confirm":
            keep = int(fault.params.get("keep_bytes", max(keep, 0) // 2 // GRANULARITY * GRANULARITY))
        elif fault and fault.kind == "drop_connection":
            drop_after = int(fault.params.get("after_bytes", (length or 0) // 2))
            keep = int(fault.params.get("keep_bytes", 0))
        md5, sha = session.md5.copy(), session.sha256.copy()
        stored, read = 0, 0
        with session.path.open("r+b") as out:
            out.seek(session.committed)
            try:
                while drop_after is None or read < drop_after:
                    want = BLOCK if drop_after is None else min(BLOCK, drop_after - read)
                    data = call.body.read(want)
                    if not data:
                        break
                    self._count_received(session, len(data))
                    piece = data[max(0, skip - read) :]
                    read += len(data)
                    if keep >= 0:
                        piece = piece[: max(0, keep - stored)]
                    out.write(piece)
                    md5.update(piece)
                    sha.update(piece)
                    stored += len(piece)
            except _ClientGone:
                out.truncate(session.committed)  # keep nothing of a torn chunk
                raise
            out.truncate(session.committed + stored)
        session.md5, session.sha256 = md5, sha
        session.committed += stored
        return None if drop_after is not None else stored

    def _count_received(self, session: UploadSession, n: int) -> None:
        with self._lock:
            session.bytes_received += n
            self.bytes_received += n

    def _finish(self, session: UploadSession) -> _Response:
        """Turn a complete upload into a file (or new content for files.update)."""
        if session.total is not None and session.committed != session.total:
            raise _bad_request("Upload size does not match the declared length.")
        with self._lock:
            if session.target is not None:
                item = self._items[session.target]
                self._apply_metadata(item, session.metadata)
            else:
                file_id = self._check_new_id(session.metadata)
                parent, drive_id, owner = self._placement(
                    session.principal, session.all_drives, session.metadata
                )
                item = self._new_item(file_id, session.metadata, parent, drive_id, owner, session.mime_type)
                self._items[file_id] = item
            path = self.storage / "files" / item.id
            shutil.move(session.path, path)
            item.content_path, item.size = path, session.committed
            item.md5, item.sha256 = session.md5.hexdigest(), session.sha256.hexdigest()
            session.file_id = item.id
            self._uploaded.append((time.time(), session.committed))
        return self._file_response(item, session.fields)


# ---------------------------------------------------------------- helpers


def _session_request_type(call: _Call) -> str:
    content_range = call.headers.get("Content-Range") or ""
    return "status" if content_range.replace(" ", "").startswith("bytes*/") else "chunk"


def _upload_request_type(call: _Call) -> str:
    if "upload_id" in call.query:
        return _session_request_type(call)
    return {"resumable": "initiate", "multipart": "multipart", "media": "simple"}.get(
        call.query.get("uploadType", ""), "unknown"
    )


def _parse_content_range(value: str) -> tuple[int | None, int | None, int | None]:
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value)
    if not m or (m.group(1) and int(m.group(2)) < int(m.group(1))):
        raise _bad_request("Failed to parse Content-Range header.")
    total = None if m.group(3) == "*" else int(m.group(3))
    if m.group(1) is None:
        return None, None, total
    return int(m.group(1)), int(m.group(2)), total


def _resume_incomplete(committed: int) -> _Response:
    # No Range header at all when nothing is stored yet, as the protocol says.
    headers = {"Range": f"bytes=0-{committed - 1}"} if committed else {}
    return _Response(308, headers=headers)


def _media_response(item: Item, range_header: str | None) -> _Response:
    assert item.content_path is not None
    size = item.size
    headers = {"Content-Type": item.mime_type, "Accept-Ranges": "bytes"}
    if not range_header:
        return _Response(200, headers=headers, stream=(item.content_path, 0, size))
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
    if not m or (not m.group(1) and not m.group(2)):
        return _Response(200, headers=headers, stream=(item.content_path, 0, size))
    if m.group(1):
        first = int(m.group(1))
        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:
        first, last = max(0, size - int(m.group(2))), size - 1
    if first >= size or last < first:
        return _Response(416, headers={"Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return _Response(206, headers=headers, stream=(item.content_path, first, last - first + 1))


def _split_multipart(spool: Path, headers: Message) -> tuple[dict[str, Any], str, int, int]:
    """(metadata, media type, start, end) of the media part inside a spooled body."""
    boundary = headers.get_param("boundary")
    if not isinstance(boundary, str):
        raise _bad_request("Missing multipart boundary.")
    delim = b"--" + boundary.encode()
    size = spool.stat().st_size
    with spool.open("rb") as f:
        head = f.read(min(size, 1024 * 1024))
        f.seek(max(0, size - 4096))
        tail_offset = f.tell()
        tail = f.read()
    parts = head.split(delim)
    if len(parts) < 3:
        raise _bad_request("Malformed multipart body.")
    meta_headers, _, meta_body = re.split(rb"(\r?\n\r?\n)", parts[1].lstrip(b"\r\n"), maxsplit=1)
    media_offset = head.index(delim, len(parts[0]) + len(delim)) + len(delim)
    m = re.match(rb"\r?\n((?:.+\r?\n)*?)\r?\n", head[media_offset:])
    if not m:
        raise _bad_request("Malformed multipart body.")
    mime = re.search(rb"(?im)^content-type:\s*([^\r\n;]+)", m.group(1))
    close = tail.rfind(delim + b"--")
    if close < 0:
        raise _bad_request("Malformed multipart body.")
    end = tail_offset + close
    end -= 2 if tail[:close].endswith(b"\r\n") else 1 if tail[:close].endswith(b"\n") else 0
    try:
        metadata = json.loads(meta_body.strip() or b"{}")
    except ValueError as exc:
        raise _bad_request("Parse Error", "parseError") from exc
    media_type = mime.group(1).decode().strip() if mime else "application/octet-stream"
    return metadata, media_type, media_offset + m.end(), end


def _copy_range(src: BinaryIO, dst: BinaryIO, start: int, end: int) -> tuple[Any, Any, int]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    src.seek(start)
    left = end - start
    while left > 0 and (data := src.read(min(BLOCK, left))):
        dst.write(data)
        md5.update(data)
        sha.update(data)
        left -= len(data)
    return md5, sha, end - start


def _int_param(call: _Call, name: str, default: int) -> int:
    try:
        return int(call.query.get(name, default))
    except ValueError as exc:
        raise _invalid_param(name) from exc


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()))
    except ValueError as exc:
        raise _invalid_param("pageToken") from exc


def _order(items: list[Item], order_by: str | None) -> list[Item]:
    for key in reversed([k.strip() for k in (order_by or "").split(",") if k.strip()]):
        name, _, direction = key.partition(" ")
        getter: Callable[[Item], Any] = {
            "name": lambda i: i.name,
            "createdTime": lambda i: i.created_time,
            "modifiedTime": lambda i: i.modified_time,
            "folder": lambda i: not i.is_folder,
        }.get(name, lambda i: 0)
        items = sorted(items, key=getter, reverse=direction.strip().lower() == "desc")
    return items


def _props(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _info(item: Item) -> FileInfo:
    return FileInfo(
        item.id,
        item.name,
        item.mime_type,
        list(item.parents),
        item.drive_id,
        item.owner,
        item.size,
        item.md5,
        item.sha256,
        dict(item.app_properties),
        item.trashed,
        item.content_path,
        [dict(p) for p in item.permissions],
    )


def _session_info(s: UploadSession) -> SessionInfo:
    return SessionInfo(s.id, s.uri, s.committed, s.total, s.bytes_received, s.file_id, s.expired)


def _load_public_key(pem: bytes | str) -> rsa.RSAPublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    if b"CERTIFICATE" in data:  # Google publishes service-account keys as x509 certs
        key: object = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("service account key must be RSA")
    return key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Google Drive v3 emulator (offline demo)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8555)
    parser.add_argument("--dir", required=True, type=Path, help="where content is stored")
    parser.add_argument(
        "--public-key", required=True, type=Path, help="PEM public key (or x509 cert) of the service account"
    )
    parser.add_argument(
        "--allowed-subject",
        action="append",
        dest="subjects",
        help="user the service account may impersonate (repeatable)",
    )
    parser.add_argument(
        "--shared-drive",
        action="append",
        default=[],
        help="create a shared drive with this name (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly under a supervisor
    drive = DriveEmulator(
        args.dir, args.public_key.read_bytes(), host=args.host, port=args.port, allowed_subjects=args.subjects
    )
    with drive:
        print(f"Drive emulator at {drive.url} (token_uri {drive.token_uri})", flush=True)
        for name in args.shared_drive:
            print(f"shared drive {name!r}: {drive.create_shared_drive(name)}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()

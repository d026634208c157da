"""A real S3-protocol server for the tests (moto's, over HTTP on 127.0.0.1) and a small
proxy in front of it that counts requests and can misbehave on cue.

moto stores the checksums a client sends without checking them, so the proxy checks
them the way S3 does (x-amz-checksum-sha256 / -crc32, Content-MD5 against the body, 400
BadDigest on a mismatch). It can also corrupt a body on the way, answer an error
instead of the server, or hold a request until the test lets it go (or kills the client).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


@dataclass
class Seen:
    """One request as it reached the proxy, and what became of it."""

    op: str
    key: str
    part: int | None
    status: int = 0
    size: int = 0
    checksum: str | None = None  # the checksum header the body carried
    forwarded: bool = True


@dataclass
class Fault:
    """Misbehave on requests for `op` (and `part`, for UploadPart), `times` times."""

    op: str
    action: str  # "corrupt", "status" or "hold"
    part: int | None = None
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    retry_after: int | None = None
    released: threading.Event = field(default_factory=threading.Event)
    hits: int = 0


def operation(method: str, path: str, query: dict[str, list[str]], headers: Any) -> str:
    parts = path.strip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if method == "PUT" and "partNumber" in query:
        return "UploadPartCopy" if headers.get("x-amz-copy-source") else "UploadPart"
    if method == "PUT" and has_key:
        return "CopyObject" if headers.get("x-amz-copy-source") else "PutObject"
    if method == "POST":
        return (
            "CreateMultipartUpload"
            if "uploads" in query
            else ("CompleteMultipartUpload" if "uploadId" in query else "Post")
        )
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if "uploads" in query:
            return "ListMultipartUploads"
        return "GetObject" if has_key else "ListObjects"
    return method


class S3Proxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        for fault in self.faults:
            fault.released.set()
        self.server.shutdown()
        self.server.server_close()

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def ops(self, *, ok: bool = True) -> dict[str, int]:
        """How many requests of each operation the server answered (successfully)."""
        counts: dict[str, int] = {}
        for s in list(self.seen):
            if s.forwarded and (not ok or 200 <= s.status < 300):
                counts[s.op] = counts.get(s.op, 0) + 1
        return counts

    def parts_stored(self) -> list[int]:
        """The part number of every UploadPart the server stored, in order."""
        return [
            s.part
            for s in list(self.seen)
            if s.op == "UploadPart" and s.forwarded and s.status == 200 and s.part is not None
        ]

    def clear(self) -> None:
        with self.lock:
            self.seen.clear()

    def fault_for(self, seen: Seen) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.op == seen.op and fault.part in (None, seen.part) and fault.hits < fault.times:
                    fault.hits += 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    proxy: S3Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._relay()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _relay(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        op = operation(self.command, parts.path, query, self.headers)
        key = unquote(parts.path.strip("/").split("/", 1)[-1]) if "/" in parts.path.strip("/") else ""
        seen = Seen(
            op,
            key,
            int(query["partNumber"][0]) if "partNumber" in query else None,
            size=len(body),
            checksum=_checksum_header(self.headers),
        )
        fault = self.proxy.fault_for(seen)
        try:
            if fault is not None and fault.action == "hold":
                fault.released.wait(120)
                seen.forwarded = False
                self.close_connection = True
                return
            if fault is not None and fault.action == "corrupt" and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            if fault is not None and fault.action == "status":
                seen.forwarded = False
                self._error(seen, fault.status, fault.code, fault.retry_after)
                return
            if not _checksum_ok(self.headers, body):
                seen.forwarded = False
                self._error(seen, 400, "BadDigest", None)
                return
            self._forward(seen, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with self.proxy.lock:
                self.proxy.seen.append(seen)

    def _forward(self, seen: Seen, body: bytes) -> None:
        upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            seen.status = response.status
            self.send_response(response.status)
            for name, value in response.getheaders():
                # HEAD keeps the object's length; other bodies are relayed whole.
                if name.lower() in _HOP_BY_HOP or (
                    name.lower() == "content-length" and self.command != "HEAD"
                ):
                    continue
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            upstream.close()

    def _error(self, seen: Seen, status: int, code: str, retry_after: int | None) -> None:
        seen.status = status
        data = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _checksum_header(headers: Any) -> str | None:
    for name in ("x-amz-checksum-sha256", "x-amz-checksum-crc32", "Content-MD5"):
        if headers.get(name):
            return name.lower()
    return None


def _checksum_ok(headers: Any, body: bytes) -> bool:
    digests: dict[str, Callable[[], bytes]] = {
        "x-amz-checksum-sha256": lambda: hashlib.sha256(body).digest(),
        "x-amz-checksum-crc32": lambda: zlib.crc32(body).to_bytes(4, "big"),
        "Content-MD5": lambda: hashlib.md5(body, usedforsecurity=False).digest(),
    }
    return all(
        headers.get(name) is None or headers.get(name) == base64.b64encode(digest()).decode()
        for name, digest in digests.items()
    )

"""Slow clients for tests and benchmarks: connections that send a request's headers at once
and then its body one byte at a time, the way a slow or hostile client holds a server's
connection. Loopback only; one thread drives them all."""

from __future__ import annotations

import collections
import selectors
import socket
import threading
import time
from types import TracebackType
from urllib.parse import urlsplit


class SlowClients:
    """``count`` connections posting to ``path``, one body byte per ``interval`` seconds
    each. A connection the server closes (after answering, say, 408) is opened again, so
    the pressure stays at ``count`` for as long as the context lasts."""

    def __init__(
        self,
        base_url: str,
        count: int,
        *,
        path: str = "/webhooks/fal",
        body_bytes: int = 100_000,
        interval: float = 1.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("slow clients only run against a loopback server")
        self.address = (parts.hostname, parts.port or 80)
        self.count = count
        self.interval = interval
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {body_bytes}\r\n\r\n"
        ).encode()
        self.opened = 0
        self.answers: collections.Counter[str] = collections.Counter()
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("slow clients could not connect")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(30)

    def _open(self) -> None:
        sock = socket.create_connection(self.address, timeout=10)
        sock.sendall(self.head)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def _close(self, sock: socket.socket) -> None:
        self._selector.unregister(sock)
        sock.close()

    def _run(self) -> None:
        try:
            for _ in range(self.count):
                self._open()
            self._ready.set()
            while not self._stop.is_set():
                tick = time.monotonic() + self.interval
                # The server answered (and closed, or will): note how, and replace it.
                for key, _ in self._selector.select(0):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(4096)
                        answer = data[9:12].decode("ascii", "replace") if data else "closed"
                    except OSError:  # a server closing with bytes unread sends RST, and the
                        answer = "reset"  # kernel may drop its answer with it
                    self.answers[answer] += 1
                    self._close(sock)
                    self._open()
                for key in list(self._selector.get_map().values()):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        sock.send(b" ")
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.answers["reset"] += 1
                        self._close(sock)
                        self._open()
                self._stop.wait(max(0.0, tick - time.monotonic()))
        finally:
            self._ready.set()
            for key in list(self._selector.get_map().values()):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                self._close(sock)
            self._selector.close()

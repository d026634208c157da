"""A bounded pool of Postgres connections for one process (the web process's).

Connections are opened on demand, at most ``size`` at once, and kept for the next caller
(last returned, first reused). A caller waits up to ``wait_seconds`` for one, then gets
``PoolTimeout``, an ``OperationalError`` like any other "Postgres unavailable".

A connection is never handed out dead: one the server closed while it sat idle (a
restart, ``pg_terminate_backend``, an idle timeout) has something to read or has hung up
(a read that does not wait tells), so it is dropped and another taken. One returned
broken, or in a state a rollback cannot clear, is closed rather than kept.

The lock and the semaphore are ``threading``'s, created in ``__init__``: under gunicorn's
gevent worker they are gevent's (the worker patches ``threading`` before it loads the
app), so a request waiting for a connection yields to the others.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import psycopg2
import psycopg2.extensions

from db.connection import Connection

log = logging.getLogger(__name__)


class PoolTimeout(psycopg2.OperationalError):
    """Every connection of this pool stayed busy for the whole wait."""


class ConnectionPool:
    def __init__(self, connect: Callable[[], Connection], *, size: int, wait_seconds: float) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one connection, got {size}")
        self._connect = connect
        self.size = size
        self.wait_seconds = wait_seconds
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()  # guards _idle
        self._idle: list[Connection] = []
        self.opened = 0  # connections opened over the pool's life (tests, metrics)

    def acquire(self) -> Connection:
        """A live connection with no transaction open; release it when done."""
        if not self._slots.acquire(timeout=self.wait_seconds):
            raise PoolTimeout("every Postgres connection of this process is busy")
        try:
            conn = self._take_idle()
            if conn is None:
                conn = self._connect()
                self.opened += 1
            return conn
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection) -> None:
        """Give back a connection from `acquire`: rolled back and kept, or closed if broken."""
        try:
            if _reusable(conn):
                with self._lock:
                    self._idle.append(conn)
            else:
                _close(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections (those in use are closed when released)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)

    def idle_count(self) -> int:
        with self._lock:
            return len(self._idle)

    def _take_idle(self) -> Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _alive(conn):
                return conn
            log.info("dropped a pooled Postgres connection the server had closed")
            _close(conn)


def _alive(conn: Connection) -> bool:
    """An idle connection has nothing to read: anything there is the server's goodbye (a
    FATAL message, or end of file), and the connection is dropped anyway, so reading a
    byte of it costs nothing. libpq keeps its socket non-blocking, so the read returns at
    once; a plain read, not select(), which gevent would turn into a trip to its hub."""
    if conn.closed:
        return False
    try:
        fd = conn.fileno()
        if os.get_blocking(fd):
            return True  # not libpq's usual socket: a read could wait; let the query tell
        os.read(fd, 1)
    except BlockingIOError:
        return True
    except (OSError, psycopg2.Error):
        return False
    return False


def _reusable(conn: Connection) -> bool:
    if conn.closed:
        return False
    status = conn.info.transaction_status
    if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return True
    if status in (
        psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN,
        psycopg2.extensions.TRANSACTION_STATUS_ACTIVE,
    ):
        return False  # lost, or cut off mid-query (a timeout in its greenlet)
    try:
        conn.rollback()
    except psycopg2.Error:
        return False
    return not conn.closed


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass

"""What the web process needs from gunicorn's gevent workers (gunicorn.conf.py calls
`configure` in each worker once the app is loaded).

A gevent worker gives every connection a greenlet, so a client that sends its body slowly
costs a greenlet, not one of a few threads (docs/benchmarks.md, slow clients). Three
things make that safe:
- psycopg2 waits through gevent (its wait callback), or each query would stall every
  other request of the process;
- at most WEB_THREADS requests per process hold a Postgres connection at once: the
  pool (db/pool.py, created by the app factory after gevent patched ``threading``) waits
  for one as a greenlet, and greenlets are many;
- a request body must arrive within ``body_seconds``, or the client gets 408 and its
  connection is closed: a trickling client cannot hold a connection slot for long.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import psycopg2
import psycopg2.extensions
from flask import Flask

from listener.errors import BODY_GUARD_EXTENSION, BodyGuard


def configure(app: Flask, *, body_seconds: float) -> None:
    psycopg2.extensions.set_wait_callback(gevent_wait)
    guard: BodyGuard = app.extensions[BODY_GUARD_EXTENSION]
    guard.limit(body_seconds, gevent_timeout)


# libpq ignores connect_timeout on a connection polled this way (it would wait for a
# silent server for ever, holding a Postgres slot): db.connection's 10 s, applied here.
CONNECT_TIMEOUT_SECONDS = 10.0
_CONNECTED = frozenset(
    {psycopg2.extensions.STATUS_READY, psycopg2.extensions.STATUS_BEGIN, psycopg2.extensions.STATUS_PREPARED}
)


def gevent_wait(conn: Any, timeout: float | None = None) -> None:
    """psycopg2's documented wait loop for coroutine libraries, with gevent's waits."""
    from gevent.socket import wait_read, wait_write

    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        wait = timeout
        if conn.status not in _CONNECTED:
            wait = CONNECT_TIMEOUT_SECONDS
        try:
            if state == psycopg2.extensions.POLL_READ:
                wait_read(conn.fileno(), timeout=wait)
            elif state == psycopg2.extensions.POLL_WRITE:
                wait_write(conn.fileno(), timeout=wait)
            else:
                raise psycopg2.OperationalError(f"unexpected state from poll(): {state!r}")
        except TimeoutError:
            raise psycopg2.OperationalError("timeout connecting to Postgres") from None


def gevent_timeout(seconds: float, error: BaseException) -> AbstractContextManager[object]:
    """Raise `error` in this greenlet when `seconds` pass, whatever it is blocked on."""
    import gevent

    timeout: AbstractContextManager[object] = gevent.Timeout(seconds, error)
    return timeout

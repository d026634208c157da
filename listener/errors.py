"""Bad input gets a 4xx, always, with a JSON error (DESIGN.md), whichever view it reaches.

The classes of bad input the views cannot catch themselves are handled here, app-wide:
- a request body the server cannot read (a malformed chunked body, a client gone midway,
  a body still arriving after the deadline): 400 or 408, via `BodyGuard` around the
  WSGI input stream, so every view that reads a body gets it;
- JSON nested so deep that parsing it overflows the stack: a parse error (400), via the
  app's JSON provider, which `request.get_json` uses;
- every HTTP error (404, 405, 413, ...) is answered as ``{"error": ...}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import IO, Any, TypeVar

import psycopg2
from flask import Flask, Response, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, HTTPException, RequestTimeout

log = logging.getLogger(__name__)

BODY_GUARD_EXTENSION = "falback_body_guard"
# (seconds, exception to raise) -> a context that raises it in the reading code when due.
Timer = Callable[[float, BaseException], AbstractContextManager[object]]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
T = TypeVar("T")


def init_app(app: Flask) -> None:
    app.json = DepthSafeJSONProvider(app)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(psycopg2.OperationalError, database_unavailable)
    guard = BodyGuard(app.wsgi_app)
    app.extensions[BODY_GUARD_EXTENSION] = guard
    app.wsgi_app = guard  # type: ignore[method-assign]


class DepthSafeJSONProvider(DefaultJSONProvider):
    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            # get_json turns a ValueError into 400 (or None when silent), like any bad JSON.
            raise ValueError("JSON nested too deeply") from None


def http_error(error: HTTPException) -> Response | HTTPException:
    if error.code is None or error.code < 400:
        return error
    response = jsonify(error=error.description)
    response.status_code = error.code
    # Keep what the error adds for the client: Allow on 405, WWW-Authenticate on 401, ...
    for name, value in error.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def database_unavailable(error: psycopg2.OperationalError) -> tuple[Response, int, dict[str, str]]:
    # An outage, not bad input: 503 so a sender retries. Views that answer 503 themselves
    # (the webhooks) never get here.
    log.error("postgres unavailable: %s", type(error).__name__)
    return jsonify(error="database unavailable; retry later"), 503, {"Retry-After": "30"}


class BodyGuard:
    """WSGI middleware wrapping the server's input stream: any error reading it is the
    client's (400), and with a limit set, a body still arriving `seconds` after the
    request started is abandoned with 408."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.seconds: float | None = None
        self.timer: Timer | None = None

    def limit(self, seconds: float, timer: Timer) -> None:
        self.seconds, self.timer = seconds, timer

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        stream = environ.get("wsgi.input")
        if stream is not None:
            deadline = None
            if self.seconds is not None and self.timer is not None:
                deadline = time.monotonic() + self.seconds
            environ["wsgi.input"] = GuardedInput(stream, deadline, self.timer)
        return self.app(environ, start_response)


class GuardedInput:
    """The WSGI input stream (read, readline, readlines, iteration) with `BodyGuard`'s rules."""

    def __init__(self, stream: IO[bytes], deadline: float | None, timer: Timer | None) -> None:
        self._stream = stream
        self._deadline = deadline
        self._timer = timer

    def read(self, size: int | None = -1) -> bytes:
        return self._guard(lambda: self._stream.read(-1 if size is None else size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._guard(lambda: self._stream.readline(-1 if size is None else size))

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._guard(lambda: self._stream.readlines(hint))

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def _guard(self, read: Callable[[], T]) -> T:
        try:
            if self._deadline is None or self._timer is None:
                return read()
            remaining = self._deadline - time.monotonic()
            too_slow = RequestTimeout("the request body did not arrive in time")
            if remaining <= 0:
                raise too_slow
            with self._timer(remaining, too_slow):
                return read()
        except HTTPException:
            raise
        except Exception as e:
            # Whatever the server's reader raises (gunicorn's chunk parser errors, a
            # truncated body, a reset) is about the bytes the client sent.
            raise BadRequest(f"the request body could not be read ({type(e).__name__})") from e

"""For long-running loops (relay, cron): a clean stop on SIGTERM/SIGINT, and backoff."""

from __future__ import annotations

import logging
import random
import select
import signal
import socket
from types import FrameType

log = logging.getLogger(__name__)


class GracefulStop:
    """Set by SIGTERM or SIGINT; `wait` and select() on `fileno()` wake up at once.

    The handler only sets a flag and writes a byte to a socket pair, so a loop blocked in
    select() returns immediately instead of at its next timeout.
    """

    def __init__(self) -> None:
        self.requested = False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def install(self) -> GracefulStop:
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def request(self) -> None:
        self.requested = True
        try:
            self._writer.send(b"\0")
        except OSError:
            pass  # buffer full: a wake-up is already pending

    def fileno(self) -> int:
        return self._reader.fileno()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; return True if a stop was requested."""
        if not self.requested:
            select.select([self._reader], [], [], max(timeout, 0.0))
        return self.requested

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self.request()


class Backoff:
    """Exponential backoff with jitter: base, 2x base ... up to `cap`, each scaled by a
    random factor in [0.5, 1) so that many processes do not reconnect in lockstep."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2.0**self.failures)
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0

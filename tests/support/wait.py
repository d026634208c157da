"""Polling with a deadline: the one way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """Poll `check` until it returns something truthy and return that; fail naming `what`
    after `timeout` seconds. An exception in `ignoring` counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except ignoring:
            pass
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)

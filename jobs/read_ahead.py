"""Read a stream of chunks in a thread, a bounded distance ahead of whoever consumes it.

A copy alternates between waiting on its source and waiting on its destination; with
the source read in a thread, the next chunk arrives while the current one is uploaded.
At most ``limit`` bytes (plus the chunk in hand) wait between the two, so memory stays
flat: about one upload chunk here, one in the destination's buffer. ``tap`` sees every
chunk in the reader's thread (the copy's MD5, which then overlaps the upload too).

The reader's exception is re-raised in the consumer as it is (the copy's classified
errors pass through unchanged). Leaving the ``with`` block, normally or not, stops the
reader and joins it: ``interrupt`` (the source's abort) wakes a read that is blocked on
the network, and the source generator is closed in the reader's own thread, so its
``finally`` (closing the response) runs there.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType


class ReadAhead:
    def __init__(
        self,
        source: Iterator[bytes],
        *,
        limit: int,
        tap: Callable[[bytes], None] | None = None,
        interrupt: Callable[[], None] | None = None,
        name: str = "read-ahead",
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 byte, got {limit}")
        self._source = source
        self.limit = limit
        # Each side is woken a quarter of the limit at a time, not for every chunk: a
        # wake-up is a thread switch (and a wait for the GIL), a quarter keeps both fed.
        self._batch = max(limit // 4, 1)
        self._tap = tap
        self._interrupt = interrupt
        lock = threading.Lock()
        self._filled = threading.Condition(lock)  # the consumer waits on it for chunks
        self._drained = threading.Condition(lock)  # the reader waits on it for room
        self._chunks: deque[bytes] = deque()
        self._buffered = 0  # bytes in _chunks
        self._reader_waiting = False  # for room: the consumer wakes it a batch later
        self._done = False  # the reader is finished: end of source, error or stopped
        self._stopping = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name=name, daemon=True)
        self.chunks_read = 0  # chunks the reader has taken from the source so far

    def __enter__(self) -> ReadAhead:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._filled:
                if not self._chunks:
                    self._filled.wait_for(lambda: self._buffered >= self._batch or self._done)
                if not self._chunks:
                    if self._error is not None:
                        raise self._error
                    return
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._reader_waiting and self._buffered <= self.limit - self._batch:
                    self._reader_waiting = False
                    self._drained.notify()
            yield chunk

    def stop(self) -> None:
        """Stop the reader (if it is still going) and wait for its thread to end."""
        with self._filled:
            running = not self._done
            self._stopping = True
            self._chunks.clear()
            self._buffered = 0
            self._reader_waiting = False
            self._drained.notify()
        if running and self._interrupt is not None and self._thread.is_alive():
            self._interrupt()
        if self._thread.ident is not None:
            self._thread.join()

    def _read(self) -> None:
        try:
            for chunk in self._source:
                if self._tap is not None:
                    self._tap(chunk)
                with self._filled:
                    if self._buffered >= self.limit and not self._stopping:
                        # Full: wait until a batch has gone, not for every chunk taken.
                        self._reader_waiting = True
                        self._drained.wait_for(lambda: not self._reader_waiting or self._stopping)
                    if self._stopping:
                        return
                    before = self._buffered
                    self._chunks.append(chunk)
                    self._buffered += len(chunk)
                    self.chunks_read += 1
                    if before < self._batch <= self._buffered:
                        self._filled.notify()
        except BaseException as e:  # handed to the consumer, which raises it
            with self._filled:
                if not self._stopping:
                    self._error = e
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: S110 - stopping: the copy's outcome is decided elsewhere
                    pass
            with self._filled:
                self._done = True
                self._filled.notify()

"""jobs/transfer.py reads the source in a thread one upload chunk ahead of the upload
(jobs/read_ahead.py): the two overlap, memory stays bounded, the source's errors come
through classified as before, and the reader thread never outlives the copy."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.config import Config
from db.ledger import LedgerRow
from jobs.destinations.base import StoredFile
from jobs.errors import PermanentError, SourceGone, TransientError
from jobs.fetch import SourceFetcher, SourceStream
from jobs.read_ahead import ReadAhead
from jobs.transfer import copy_file
from tests.fakes.cdn import FakeCdn

CHUNK = 256 * 1024  # the source's read size in these tests, and the upload's chunk
WAIT = 10.0  # only a bound for a failing test: no assert depends on timing


@pytest.fixture
def copy_config(tmp_path: Path) -> Config:
    return Config(
        source_hosts=("127.0.0.1",),
        allow_loopback_sources=True,
        read_timeout=10.0,
        connect_timeout=2.0,
        fetch_resume_attempts=2,
        fetch_chunk_size=CHUNK,
        backup_dir=tmp_path,
    )


def ledger_row(url: str) -> LedgerRow:
    return LedgerRow(1, url, "regular", "copying", 1, None, None, None, None, "a.mp4", None, None, None)


def readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("source-ledger-")]


class Events:
    """What the reader and the upload did, in order, with a way to wait for a step."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.changed = threading.Condition()
        self.read_bytes = 0
        self.written_bytes = 0
        self.most_ahead = 0  # largest read_bytes - written_bytes seen

    def add(self, event: str, *, read: int = 0, written: int = 0) -> None:
        with self.changed:
            self.log.append(event)
            self.read_bytes += read
            self.written_bytes += written
            self.most_ahead = max(self.most_ahead, self.read_bytes - self.written_bytes)
            self.changed.notify_all()

    def wait_for(self, event: str) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: event in self.log, timeout=WAIT)


class RecordingStream(SourceStream):
    events: Events

    def chunks(self) -> Iterator[bytes]:
        for n, chunk in enumerate(super().chunks()):
            self.events.add(f"read {n}", read=len(chunk))
            yield chunk


class RecordingFetcher(SourceFetcher):
    def __init__(self, config: Config, events: Events) -> None:
        super().__init__(config)
        self.events = events
        self.streams: list[RecordingStream] = []

    def open(self, url: str) -> SourceStream:
        plain = super().open(url)
        stream = RecordingStream(self, url, plain.response, plain.total)
        stream.events = self.events
        self.streams.append(stream)
        return stream


class FakeUpload:
    def __init__(self, events: Events, on_write: Callable[[int], None], offset: int) -> None:
        self.events, self.on_write, self.offset = events, on_write, offset
        self.chunk_size = CHUNK
        self.data = hashlib.md5(usedforsecurity=False)
        self.writes = 0
        self.finished: tuple[int, str] | None = None
        self.abandoned = False

    def write(self, chunk: bytes) -> None:
        n = self.writes
        self.writes += 1
        self.on_write(n)
        self.data.update(chunk)
        self.events.add(f"wrote {n}", written=len(chunk))

    def finish(self, size: int, md5: str) -> StoredFile:
        self.finished = (size, md5)
        return StoredFile("fake", "1", "", size, md5)

    def abandon(self) -> None:
        self.abandoned = True


class FakeDestination:
    name = "fake"

    def __init__(self, events: Events, on_write: Callable[[int], None] = lambda _n: None, offset: int = 0):
        self.events, self.on_write, self.offset = events, on_write, offset
        self.opened: list[FakeUpload] = []
        self.on_open: Callable[[], None] = lambda: None

    def find(self, row: LedgerRow) -> StoredFile | None:
        return None

    def open(self, row: LedgerRow, size: int | None) -> FakeUpload:
        self.on_open()
        upload = FakeUpload(self.events, self.on_write, self.offset)
        self.opened.append(upload)
        return upload


def test_the_copy_hashes_and_counts_every_byte_as_before(copy_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/whole.mp4", 5_000_001)
    events = Events()
    destination = FakeDestination(events)
    stored = copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    upload = destination.opened[0]
    assert upload.finished == (5_000_001, cdn.file(url).md5()) == (stored.size, stored.md5)
    assert upload.data.hexdigest() == cdn.file(url).md5() and not upload.abandoned
    assert readers() == []


def test_a_resumed_upload_is_sent_only_what_it_lacks_and_hashed_whole(
    copy_config: Config, cdn: FakeCdn
) -> None:
    url = cdn.add("/files/b/x/resumed.mp4", 3 * CHUNK + 5)
    events = Events()
    destination = FakeDestination(events, offset=CHUNK + 7)
    copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    upload = destination.opened[0]
    assert upload.finished == (3 * CHUNK + 5, cdn.file(url).md5())
    assert events.written_bytes == 3 * CHUNK + 5 - (CHUNK + 7)
    sent = b"".join(cdn.file(url).iter_bytes(CHUNK + 7))
    assert upload.data.hexdigest() == hashlib.md5(sent, usedforsecurity=False).hexdigest()


def test_the_next_chunk_is_read_while_the_upload_of_this_one_is_under_way(
    copy_config: Config, cdn: FakeCdn
) -> None:
    """A slow destination (each write waits) and a slow source (each chunk takes a while):
    the first write does not return until the reader has read the chunk after it, which
    could never happen if reading waited for the upload."""
    url = cdn.add("/files/b/x/overlap.mp4", 6 * CHUNK, slow_delay=0.02)
    events = Events()

    def slow_write(n: int) -> None:
        if n < 3:
            assert events.wait_for(f"read {n + 1}"), events.log
        events.add(f"writing {n} saw read {n + 1}")

    destination = FakeDestination(events, slow_write)
    copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    log = events.log
    for n in range(3):
        assert log.index(f"read {n + 1}") < log.index(f"wrote {n}")
    assert destination.opened[0].finished == (6 * CHUNK, cdn.file(url).md5())


def test_the_reader_stays_at_most_one_upload_chunk_ahead(copy_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/bounded.mp4", 40 * CHUNK)
    events = Events()
    destination = FakeDestination(events, lambda _n: time.sleep(0.002))  # a slower upload
    copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    # One chunk queued, one more the reader holds while it waits, one being written.
    assert events.most_ahead <= 3 * CHUNK
    assert events.read_bytes == events.written_bytes == 40 * CHUNK


def test_an_upload_error_stops_the_reader(copy_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/upload-fails.mp4", 200 * CHUNK, slow_delay=0.01)
    events = Events()

    def fail(n: int) -> None:
        if n == 2:
            raise TransientError("destination answered 503")

    destination = FakeDestination(events, fail)
    fetcher = RecordingFetcher(copy_config, events)
    with pytest.raises(TransientError, match="destination answered 503"):
        copy_file(ledger_row(url), fetcher, destination)
    assert readers() == [] and destination.opened[0].abandoned
    assert events.read_bytes < 200 * CHUNK  # it stopped, rather than reading to the end


def test_an_upload_error_interrupts_a_read_waiting_on_the_network(copy_config: Config, cdn: FakeCdn) -> None:
    """The source sends a block (the stand-in CDN writes 64 KiB at a time), then nothing
    for longer than the test waits: the reader is inside a socket read when the upload of
    that block fails, and is woken, not waited for."""
    url = cdn.add("/files/b/x/stalled.mp4", 4 * CHUNK, slow_delay=30.0)
    events = Events()

    def fail(n: int) -> None:
        raise PermanentError("destination refused the file")

    config = copy_config.replace(read_timeout=60.0, fetch_chunk_size=64 * 1024)
    start = time.monotonic()
    with pytest.raises(PermanentError, match="destination refused"):
        copy_file(ledger_row(url), RecordingFetcher(config, events), FakeDestination(events, fail))
    assert readers() == []
    assert time.monotonic() - start < 20  # not the 30 s stall nor the 60 s read timeout


def test_a_body_cut_off_every_time_is_still_a_transient_error(copy_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/cut.mp4", 8 * CHUNK, truncate_at=3 * CHUNK + 100)
    events = Events()
    destination = FakeDestination(events)
    with pytest.raises(TransientError, match="cut off at byte .* after 2 resumes"):
        copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    assert readers() == [] and destination.opened[0].abandoned


def test_a_body_cut_off_once_is_resumed_from_the_reader(copy_config: Config, cdn: FakeCdn) -> None:
    url = cdn.add("/files/b/x/cut-once.mp4", 8 * CHUNK, truncate_at=3 * CHUNK + 100, truncate_times=1)
    events = Events()
    destination = FakeDestination(events)
    copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    assert destination.opened[0].finished == (8 * CHUNK, cdn.file(url).md5())
    assert cdn.file(url).requests == ["", f"bytes={3 * CHUNK}-"]


def test_a_file_that_expires_mid_copy_is_source_gone(copy_config: Config, cdn: FakeCdn) -> None:
    """Cut off mid-body, and answering 404 to the resume: SourceGone, raised in the
    reader's thread, reaches the job as SourceGone."""
    url = cdn.add("/files/b/x/expiring.mp4", 8 * CHUNK, truncate_at=2 * CHUNK + 1, truncate_times=1)
    events = Events()
    destination = FakeDestination(events)
    destination.on_open = lambda: cdn.expire(url)  # after the first response has begun
    with pytest.raises(SourceGone):
        copy_file(ledger_row(url), RecordingFetcher(copy_config, events), destination)
    assert readers() == [] and destination.opened[0].abandoned


# --- ReadAhead on its own ---------------------------------------------------------------


def test_read_ahead_raises_the_readers_own_exception() -> None:
    error = SourceGone("source answered 410")

    def source() -> Iterator[bytes]:
        yield b"a"
        raise error

    got: list[bytes] = []
    with pytest.raises(SourceGone) as caught, ReadAhead(source(), limit=10) as chunks:
        got.extend(chunks)
    assert caught.value is error and got == [b"a"]


def test_read_ahead_closes_its_source_in_the_reader_when_the_consumer_leaves_early() -> None:
    closed_in: list[str] = []

    def source() -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 100
        finally:
            closed_in.append(threading.current_thread().name)

    with ReadAhead(source(), limit=1000, name="source-ledger-test") as chunks:
        for _ in zip(range(5), chunks, strict=False):
            pass
    assert closed_in == ["source-ledger-test"] and readers() == []

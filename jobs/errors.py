"""How a copy attempt can fail. Transient errors are retried with backoff; permanent
ones end the ledger row with a readable reason and are never retried."""

from __future__ import annotations

from datetime import UTC, datetime


class CopyError(Exception):
    """Base class; the message is stored on the ledger row, so it must be readable and
    must never contain a secret."""

    permanent = False


class TransientError(CopyError):
    """Worth trying again later: timeouts, 5xx, 429, a dropped connection."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(CopyError):
    """Trying again cannot help: a blocked host, a 403, a malformed URL (bad port included)."""

    permanent = True


class SourceGone(PermanentError):
    """The source answered 404 or 410. Past the file's guaranteed window it expired at fal
    and there is nothing to copy; inside it, the job retries for a while (jobs/backup.py)."""


class VerifyError(TransientError):
    """The copy at the destination does not match what was read from the source."""


class DestinationPaused(TransientError):
    """The destination refuses uploads for a while (Drive's daily upload cap): jobs wait
    until `until` without spending an attempt."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message, retry_after=max((until - datetime.now(UTC)).total_seconds(), 0))
        self.until = until

"""Logging to stdout, one line per event, carrying the ids that matter; and redaction.

Every line a process logs passes `redact` on the handlers set up here, whichever logger
wrote it (ours, RQ's, urllib3's, gunicorn's): the fully formatted text, traceback
included, loses URL query strings (signed CDN URLs carry bearer tokens there), userinfo
passwords, Authorization / Bearer / Key values, Drive upload session ids (`upload_id`, a
capability), private keys and the values of the secret variables. What the ledger stores
as `last_error` goes through the same function (db/ledger.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

REDACTED = "[redacted]"
# The environment variables whose values are secrets wherever they show up.
SECRET_VARIABLES = (
    "FAL_KEY",
    "FALBACK_ADMIN_TOKEN",
    "FALBACK_APP_WEBHOOK_SECRET",
    "GOOGLE_DRIVE_PRIVATE_KEY",
    "GOOGLE_DRIVE_OAUTH_CLIENT_SECRET",
    "FALBACK_TOKEN_KEY",
    "FALBACK_S3_SECRET_ACCESS_KEY",
)
_MIN_SECRET = 8  # shorter values would mask ordinary words

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        f"{REDACTED} private key",
    ),
    # Authorization: Bearer x / 'Authorization': 'Key x' (a header dict's repr).
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic|key|token)\s+)?)[^\s'\",;}]+"
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(?i)\b(bearer)\s+[\w.~+/=-]+"), rf"\1 {REDACTED}"),
    # fal keys (`Key <id>:<secret>`); a bare "Key" followed by a plain word stays.
    (re.compile(r"\b(Key)\s+(?=[\w.-]*[:\d])[\w.:-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)(upload_id['\"]?\s*[=:]\s*['\"]?)[^\s&'\",;)]+"), rf"\1{REDACTED}"),
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/@:'\"]*:)[^\s/@'\"]+@"), rf"\1{REDACTED}@"),
    # The query string (and fragment) after a URL or an absolute path.
    (re.compile(r"((?:\b[a-zA-Z][a-zA-Z0-9+.-]*://|/)[^\s?#'\"<>]*)\?[^\s'\"<>]+"), rf"\1?{REDACTED}"),
)
_secrets: set[str] = set()


def add_secrets(values: Iterable[str | None]) -> None:
    """Mask these values too, wherever they appear (config secrets known to a process)."""
    for value in values:
        if value and len(value) >= _MIN_SECRET:
            _secrets.add(value)
            # Keys in env files carry their newlines escaped.
            _secrets.update(
                line
                for line in value.replace("\\n", "\n").splitlines()
                if len(line) >= _MIN_SECRET and "-----" not in line
            )


def redact(text: str) -> str:
    """`text` without anything that could be a credential (see the module docstring)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats with another formatter, then redacts the whole text, traceback included."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(self.inner, JsonFormatter):
            return self.inner.format(record)  # redacts field by field: the JSON stays valid
        return redact(self.inner.format(record))


class RedactingFilter(logging.Filter):
    """Redacts the record itself, before any handler formats it, so that handlers with a
    formatter of their own (pytest's, a platform's) and code reading records get clean
    text as well."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg, record.args = redact(record.getMessage()), None
        except (TypeError, ValueError):
            pass  # arguments that do not fit the message: logging reports that itself
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(handler: logging.Handler) -> None:
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    if not isinstance(handler.formatter, RedactingFormatter):
        handler.setFormatter(RedactingFormatter(handler.formatter))


# Ids a log call may pass in `extra=`; JSON lines carry them as fields.
ID_FIELDS = ("ledger_id", "job_id", "request_id", "delivery_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: time, level, logger, message, the ids
    the line is about, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        line.update({k: getattr(record, k) for k in ID_FIELDS if getattr(record, k, None) is not None})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["traceback"] = redact(record.exc_text)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, and `[request <id>]` on lines a web request wrote
    (jobs' lines name their ledger and job ids in the message itself)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [request {request_id}]" if request_id else text


def setup_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Log to stdout (once per process) and put redaction on every handler configured so
    far: the root's, and those of loggers that do not propagate (gunicorn's)."""
    add_secrets(os.environ.get(name) for name in SECRET_VARIABLES)
    root = logging.getLogger()
    if not any(getattr(h, "falback", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
        handler.falback = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level)
        # pgserver logs every initdb/pg_ctl command line at INFO.
        logging.getLogger("pgserver").setLevel(logging.WARNING)
    loggers = [
        root,
        *(
            logger
            for logger in logging.Logger.manager.loggerDict.values()
            if isinstance(logger, logging.Logger)
        ),
    ]
    for logger in loggers:
        for h in logger.handlers:
            install_redaction(h)

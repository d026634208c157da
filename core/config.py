"""One configuration object, read from the environment once and passed down.

Every process (web, worker, relay, cron, CLI) calls `Config.from_env()` at start-up;
tests build `Config(...)` directly. Parsing is strict: a bad value stops start-up with a
message naming the variable and what is wrong.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from croniter import croniter

from core.drive_settings import DriveSettings, parse_drive_settings
from core.env import ConfigError, EnvReader
from core.kinds import BACKFILL_TYPES
from core.media_links import PUBLIC_URL_VARIABLE, parse_public_url
from core.s3_settings import S3Settings, parse_s3_settings

__all__ = ["Config", "ConfigError", "DailyBackfill"]

# fal's CDN hosts (reference/fal.md section 4). A leading "*." matches any subdomain.
DEFAULT_SOURCE_HOSTS = ("fal.media", "*.fal.media", "storage.googleapis.com")
# fal's webhook signing keys (reference/fal.md section 2), tried in order.
DEFAULT_FAL_JWKS_URLS = (
    "https://rest.fal.ai/.well-known/jwks.json",
    # Older docs' host; most community code still uses it, so keep it as a fallback only.
    "https://rest.alpha.fal.ai/.well-known/jwks.json",
)
MAX_DATA_URI_BYTES_LIMIT = 64 * 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# What FALBACK_DESTINATIONS may name (jobs/destinations builds each).
DESTINATION_NAMES = ("local", "drive", "s3")


@dataclass(frozen=True)
class DailyBackfill:
    """The user's daily backfill: at hour:minute UTC, `backfill(type, limit)`."""

    hour: int
    minute: int
    type: str
    limit: int

    @property
    def cron(self) -> str:
        return f"{self.minute} {self.hour} * * *"

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d} {self.type} {self.limit}"


@dataclass(frozen=True)
class Config:
    # Connections. None means "start the embedded servers" (see devkit.embedded).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".falback")

    # Web.
    admin_token: str | None = None
    # The web app's public origin: backup_media_url is absolute when set (docs/media.md).
    public_url: str | None = None
    max_backfill_limit: int = 100_000
    # Postgres connections per web process (WEB_THREADS): its pool's size.
    web_db_connections: int = 4

    # Sources.
    source_hosts: tuple[str, ...] = DEFAULT_SOURCE_HOSTS
    # Lets tests and the offline demo fetch from a loopback stand-in for fal's CDN.
    # Never set in production. Private, link-local and metadata addresses stay blocked.
    allow_loopback_sources: bool = False
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # Bytes read per step; what a cut-off read had not yet returned is fetched again.
    fetch_chunk_size: int = 256 * 1024
    fetch_resume_attempts: int = 5

    # Destination: a local folder unless Drive credentials are configured.
    backup_dir: Path = Path("backups")
    # FALBACK_DESTINATIONS: every destination a file is copied to, first preference first;
    # None: one destination, Drive if configured, else S3 if configured, else the folder.
    destinations: tuple[str, ...] | None = None
    disk_full_pause_seconds: int = 300  # the local folder's pause when its disk is full

    # Jobs.
    max_attempts: int = 5
    retry_base_seconds: int = 30
    job_timeout_seconds: int = 3600
    expiry_days: int = 7
    # A 404/410 before expires_at contradicts fal's guarantee: retried this long (from the
    # first one) before the file counts as gone. 0: gone at once, like after the window.
    missing_retry_seconds: int = 24 * 3600

    # Relay and sweeps (docs/relay-and-sweeps.md).
    sweep_interval_seconds: int = 120
    sweep_limit: int = 5000
    # Dispatch (jobs/dispatch.py): each backup queue in Redis holds at most this many jobs
    # per worker serving it (the rest of the backlog waits in Postgres).
    queue_window_per_worker: int = 2
    # The user's note: every day at 02:00, {"type": "upscale", "limit": 50}. None = off.
    daily_backfill: DailyBackfill | None = DailyBackfill(2, 0, "upscale", 50)
    # `falback verify` run by the cron process: a cron expression (UTC). None = off.
    verify_schedule: str | None = "0 4 * * 0"

    # Webhooks (docs/webhooks.md). Pin the fal account: any fal user can sign a webhook.
    fal_webhook_user_id: str | None = None
    fal_jwks_urls: tuple[str, ...] = DEFAULT_FAL_JWKS_URLS
    # Lets a result fal could not put in the webhook body (payload_error) be fetched.
    fal_key: str | None = field(default=None, repr=False)
    fal_queue_base_url: str = "https://queue.fal.run"
    # Restricted files (fal's ACLs): on 401/403/404 from these hosts, with FAL_KEY set, the
    # fetch is tried once more with a CDN token from fal's REST API.
    fal_rest_base_url: str = "https://rest.fal.ai"
    fal_cdn_token_hosts: tuple[str, ...] = ("*.fal.media",)
    # Largest data: URI (sync mode) kept; the fal webhook body limit follows from it.
    max_data_uri_bytes: int = 10 * 1024 * 1024
    # whsec_<base64>: Standard Webhooks HMAC key, or the X-Falback-Secret header value.
    app_webhook_secret: str | None = field(default=None, repr=False)

    # Logs (core/logs.py): the level, and "text" lines or "json" objects for log shippers.
    log_level: str = "INFO"
    log_format: str = "text"

    # The raw GOOGLE_DRIVE_* variables (they hold the key: kept out of repr).
    google: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Parsed from `google` (docs/google-drive.md); None means the local folder.
    drive: DriveSettings | None = field(init=False, default=None, compare=False)
    # The raw FALBACK_S3_* variables (the secret key among them: kept out of repr).
    s3_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Parsed from `s3_env` (docs/s3.md); None means no S3 destination.
    s3: S3Settings | None = field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "drive", parse_drive_settings(self.google))
        object.__setattr__(self, "s3", parse_s3_settings(self.s3_env))
        for name in self.destinations or ():
            if name not in DESTINATION_NAMES:
                raise ConfigError(
                    f"FALBACK_DESTINATIONS: unknown destination {name!r}"
                    f" (expected {', '.join(DESTINATION_NAMES)})"
                )
            if (name == "drive" and self.drive is None) or (name == "s3" and self.s3 is None):
                variables = "GOOGLE_DRIVE_*" if name == "drive" else "FALBACK_S3_*"
                raise ConfigError(
                    f"FALBACK_DESTINATIONS names {name}, which is not configured: set {variables}"
                    f" (docs/{'google-drive' if name == 'drive' else 's3'}.md) or leave {name} out"
                )

    @property
    def destination_names(self) -> tuple[str, ...]:
        """Where every file is copied, first preference first (that copy fills the ledger's
        destination columns)."""
        if self.destinations:
            return self.destinations
        if self.drive is not None:
            return ("drive",)
        return ("s3",) if self.s3 is not None else ("local",)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        reader = EnvReader(env)
        defaults = cls()
        config = cls(
            database_url=reader.text("DATABASE_URL"),
            redis_url=reader.text("REDIS_URL"),
            data_dir=reader.path("FALBACK_DATA_DIR", defaults.data_dir),
            admin_token=reader.text("FALBACK_ADMIN_TOKEN"),
            public_url=parse_public_url(reader.text(PUBLIC_URL_VARIABLE)),
            max_backfill_limit=reader.integer(
                "FALBACK_MAX_BACKFILL_LIMIT", defaults.max_backfill_limit, minimum=1
            ),
            web_db_connections=reader.integer("WEB_THREADS", defaults.web_db_connections, minimum=1),
            source_hosts=reader.hosts("FALBACK_SOURCE_HOSTS", defaults.source_hosts),
            allow_loopback_sources=reader.boolean("FALBACK_ALLOW_LOOPBACK_SOURCES", False),
            connect_timeout=reader.number("FALBACK_CONNECT_TIMEOUT", defaults.connect_timeout),
            read_timeout=reader.number("FALBACK_READ_TIMEOUT", defaults.read_timeout),
            fetch_chunk_size=reader.integer(
                "FALBACK_FETCH_CHUNK_SIZE", defaults.fetch_chunk_size, minimum=1024
            ),
            fetch_resume_attempts=reader.integer(
                "FALBACK_FETCH_RESUME_ATTEMPTS", defaults.fetch_resume_attempts, minimum=0
            ),
            backup_dir=reader.path("FALBACK_BACKUP_DIR", defaults.backup_dir),
            destinations=reader.names("FALBACK_DESTINATIONS", DESTINATION_NAMES),
            disk_full_pause_seconds=reader.integer(
                "FALBACK_DISK_FULL_PAUSE", defaults.disk_full_pause_seconds, minimum=1
            ),
            max_attempts=reader.integer("FALBACK_MAX_ATTEMPTS", defaults.max_attempts, minimum=1),
            retry_base_seconds=reader.integer(
                "FALBACK_RETRY_BASE_SECONDS", defaults.retry_base_seconds, minimum=1
            ),
            job_timeout_seconds=reader.integer(
                "FALBACK_JOB_TIMEOUT", defaults.job_timeout_seconds, minimum=10
            ),
            expiry_days=reader.integer("FALBACK_EXPIRY_DAYS", defaults.expiry_days, minimum=1),
            missing_retry_seconds=reader.integer(
                "FALBACK_MISSING_RETRY_SECONDS", defaults.missing_retry_seconds, minimum=0
            ),
            sweep_interval_seconds=reader.integer(
                "FALBACK_SWEEP_INTERVAL", defaults.sweep_interval_seconds, minimum=1
            ),
            sweep_limit=reader.integer("FALBACK_SWEEP_LIMIT", defaults.sweep_limit, minimum=1),
            queue_window_per_worker=reader.integer(
                "FALBACK_QUEUE_WINDOW", defaults.queue_window_per_worker, minimum=1
            ),
            daily_backfill=_daily_backfill(reader, "FALBACK_DAILY_BACKFILL", defaults.daily_backfill),
            verify_schedule=_cron(reader, "FALBACK_VERIFY_SCHEDULE", defaults.verify_schedule),
            fal_webhook_user_id=reader.text("FAL_WEBHOOK_USER_ID"),
            fal_jwks_urls=reader.urls("FAL_JWKS_URLS", defaults.fal_jwks_urls),
            fal_key=reader.text("FAL_KEY"),
            fal_queue_base_url=reader.urls("FAL_QUEUE_BASE_URL", (defaults.fal_queue_base_url,), single=True)[
                0
            ].rstrip("/"),
            fal_rest_base_url=reader.urls("FAL_REST_BASE_URL", (defaults.fal_rest_base_url,), single=True)[
                0
            ].rstrip("/"),
            fal_cdn_token_hosts=reader.hosts("FAL_CDN_TOKEN_HOSTS", defaults.fal_cdn_token_hosts),
            max_data_uri_bytes=reader.integer(
                "FALBACK_MAX_DATA_URI_BYTES", defaults.max_data_uri_bytes, minimum=1024
            ),
            app_webhook_secret=reader.webhook_secret("FALBACK_APP_WEBHOOK_SECRET"),
            log_level=reader.choice("FALBACK_LOG_LEVEL", defaults.log_level, LOG_LEVELS),
            log_format=reader.choice("LOG_FORMAT", defaults.log_format, ("text", "json")),
            google={
                k: v
                for k, v in env.items()
                if k.startswith("GOOGLE_DRIVE_")
                or k in ("GOOGLE_APPLICATION_CREDENTIALS", "FALBACK_TOKEN_KEY")
            },
            s3_env={k: v for k, v in env.items() if k.startswith("FALBACK_S3_")},
        )
        if config.max_data_uri_bytes > MAX_DATA_URI_BYTES_LIMIT:
            raise ConfigError(
                f"FALBACK_MAX_DATA_URI_BYTES must be at most {MAX_DATA_URI_BYTES_LIMIT}"
                f" (64 MiB), got {config.max_data_uri_bytes}"
            )
        if config.daily_backfill and config.daily_backfill.limit > config.max_backfill_limit:
            raise ConfigError(
                f"FALBACK_DAILY_BACKFILL: limit {config.daily_backfill.limit} is above"
                f" FALBACK_MAX_BACKFILL_LIMIT ({config.max_backfill_limit})"
            )
        return config

    def as_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild this config (for child processes)."""
        env = {
            "FALBACK_DATA_DIR": str(self.data_dir),
            "FALBACK_MAX_BACKFILL_LIMIT": str(self.max_backfill_limit),
            "WEB_THREADS": str(self.web_db_connections),
            "FALBACK_SOURCE_HOSTS": ",".join(self.source_hosts),
            "FALBACK_ALLOW_LOOPBACK_SOURCES": str(self.allow_loopback_sources).lower(),
            "FALBACK_CONNECT_TIMEOUT": str(self.connect_timeout),
            "FALBACK_READ_TIMEOUT": str(self.read_timeout),
            "FALBACK_FETCH_CHUNK_SIZE": str(self.fetch_chunk_size),
            "FALBACK_FETCH_RESUME_ATTEMPTS": str(self.fetch_resume_attempts),
            "FALBACK_BACKUP_DIR": str(self.backup_dir),
            "FALBACK_DISK_FULL_PAUSE": str(self.disk_full_pause_seconds),
            "FALBACK_MAX_ATTEMPTS": str(self.max_attempts),
            "FALBACK_RETRY_BASE_SECONDS": str(self.retry_base_seconds),
            "FALBACK_JOB_TIMEOUT": str(self.job_timeout_seconds),
            "FALBACK_EXPIRY_DAYS": str(self.expiry_days),
            "FALBACK_MISSING_RETRY_SECONDS": str(self.missing_retry_seconds),
            "FALBACK_SWEEP_INTERVAL": str(self.sweep_interval_seconds),
            "FALBACK_SWEEP_LIMIT": str(self.sweep_limit),
            "FALBACK_QUEUE_WINDOW": str(self.queue_window_per_worker),
            "FALBACK_DAILY_BACKFILL": str(self.daily_backfill or "off"),
            "FALBACK_VERIFY_SCHEDULE": self.verify_schedule or "off",
            "FAL_JWKS_URLS": ",".join(self.fal_jwks_urls),
            "FAL_QUEUE_BASE_URL": self.fal_queue_base_url,
            "FAL_REST_BASE_URL": self.fal_rest_base_url,
            "FAL_CDN_TOKEN_HOSTS": ",".join(self.fal_cdn_token_hosts),
            "FALBACK_MAX_DATA_URI_BYTES": str(self.max_data_uri_bytes),
            "FALBACK_LOG_LEVEL": self.log_level,
            "LOG_FORMAT": self.log_format,
            **self.google,
            **self.s3_env,
        }
        for name, value in (
            ("DATABASE_URL", self.database_url),
            ("REDIS_URL", self.redis_url),
            ("FALBACK_ADMIN_TOKEN", self.admin_token),
            (PUBLIC_URL_VARIABLE, self.public_url),
            ("FAL_WEBHOOK_USER_ID", self.fal_webhook_user_id),
            ("FAL_KEY", self.fal_key),
            ("FALBACK_APP_WEBHOOK_SECRET", self.app_webhook_secret),
            ("FALBACK_DESTINATIONS", ",".join(self.destinations or ())),
        ):
            if value:
                env[name] = value
        return env

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def retry_intervals(self) -> list[int]:
        """Backoff before each retry: base, 4x base, 16x base ... capped at 6 hours."""
        return [min(self.retry_base_seconds * 4**n, 6 * 3600) for n in range(self.max_attempts - 1)]


_DAILY_BACKFILL = re.compile(r"^(\d{1,2}):(\d{2})\s+(\S+)\s+(\d+)$")


def _daily_backfill(reader: EnvReader, name: str, default: DailyBackfill | None) -> DailyBackfill | None:
    value = reader.text(name)
    if value is None:
        return default
    if value.lower() == "off":
        return None
    match = _DAILY_BACKFILL.match(value)
    if not match:
        raise ConfigError(
            f"{name} must be 'HH:MM TYPE LIMIT' (UTC, e.g. '02:00 upscale 50') or 'off', got {value!r}"
        )
    hour, minute, type_, limit = int(match[1]), int(match[2]), match[3], int(match[4])
    if hour > 23 or minute > 59:
        raise ConfigError(f"{name}: {match[1]}:{match[2]} is not a time of day")
    if type_ not in BACKFILL_TYPES:
        raise ConfigError(f"{name}: type must be one of {', '.join(BACKFILL_TYPES)}, got {type_!r}")
    if limit < 1:
        raise ConfigError(f"{name}: limit must be at least 1, got {limit}")
    return DailyBackfill(hour, minute, type_, limit)


def _cron(reader: EnvReader, name: str, default: str | None) -> str | None:
    """A cron expression of 5 fields (what rq.cron accepts, checked with its croniter), or
    'off' (None)."""
    value = reader.text(name)
    if value is None:
        return default
    if value.lower() == "off":
        return None
    fields = value.split()
    if len(fields) != 5 or not croniter.is_valid(" ".join(fields)):
        raise ConfigError(
            f"{name} must be a cron expression of 5 fields in UTC (e.g. '0 4 * * 0', Sundays at"
            f" 04:00) or 'off', got {value!r}"
        )
    return " ".join(fields)

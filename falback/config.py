"""One configuration object, read from the environment once and passed down.

Every process (web, worker, relay, cron, CLI) calls `Config.from_env()` at start-up;
tests build `Config(...)` directly. Parsing is strict: a bad value stops start-up with a
message naming the variable and what is wrong.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# fal's CDN hosts (reference/fal.md section 4). A leading "*." matches any subdomain.
DEFAULT_SOURCE_HOSTS = ("fal.media", "*.fal.media", "storage.googleapis.com")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True)
class Config:
    # Connections. None means "start the embedded servers" (see falback.embedded).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".falback")

    # Web.
    admin_token: str | None = None
    max_backfill_limit: int = 100_000

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

    # Jobs.
    max_attempts: int = 5
    retry_base_seconds: int = 30
    job_timeout_seconds: int = 3600
    expiry_days: int = 7

    google: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        defaults = cls()
        config = cls(
            database_url=reader.text("DATABASE_URL"),
            redis_url=reader.text("REDIS_URL"),
            data_dir=reader.path("FALBACK_DATA_DIR", defaults.data_dir),
            admin_token=reader.text("FALBACK_ADMIN_TOKEN"),
            max_backfill_limit=reader.integer(
                "FALBACK_MAX_BACKFILL_LIMIT", defaults.max_backfill_limit, minimum=1
            ),
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
            max_attempts=reader.integer("FALBACK_MAX_ATTEMPTS", defaults.max_attempts, minimum=1),
            retry_base_seconds=reader.integer(
                "FALBACK_RETRY_BASE_SECONDS", defaults.retry_base_seconds, minimum=1
            ),
            job_timeout_seconds=reader.integer(
                "FALBACK_JOB_TIMEOUT", defaults.job_timeout_seconds, minimum=10
            ),
            expiry_days=reader.integer("FALBACK_EXPIRY_DAYS", defaults.expiry_days, minimum=1),
            google={k: v for k, v in env.items() if k.startswith("GOOGLE_DRIVE_")},
        )
        return config

    def as_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild this config (for child processes)."""
        env = {
            "FALBACK_DATA_DIR": str(self.data_dir),
            "FALBACK_MAX_BACKFILL_LIMIT": str(self.max_backfill_limit),
            "FALBACK_SOURCE_HOSTS": ",".join(self.source_hosts),
            "FALBACK_ALLOW_LOOPBACK_SOURCES": str(self.allow_loopback_sources).lower(),
            "FALBACK_CONNECT_TIMEOUT": str(self.connect_timeout),
            "FALBACK_READ_TIMEOUT": str(self.read_timeout),
            "FALBACK_FETCH_CHUNK_SIZE": str(self.fetch_chunk_size),
            "FALBACK_FETCH_RESUME_ATTEMPTS": str(self.fetch_resume_attempts),
            "FALBACK_BACKUP_DIR": str(self.backup_dir),
            "FALBACK_MAX_ATTEMPTS": str(self.max_attempts),
            "FALBACK_RETRY_BASE_SECONDS": str(self.retry_base_seconds),
            "FALBACK_JOB_TIMEOUT": str(self.job_timeout_seconds),
            "FALBACK_EXPIRY_DAYS": str(self.expiry_days),
            **self.google,
        }
        for name, value in (("DATABASE_URL", self.database_url), ("REDIS_URL", self.redis_url),
                            ("FALBACK_ADMIN_TOKEN", self.admin_token)):
            if value:
                env[name] = value
        return env

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def retry_intervals(self) -> list[int]:
        """Backoff before each retry: base, 4x base, 16x base ... capped at 6 hours."""
        return [
            min(self.retry_base_seconds * 4**n, 6 * 3600) for n in range(self.max_attempts - 1)
        ]


class _Reader:
    """Strict parsers in the manner of Healthchecks' envbool/envint."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def path(self, name: str, default: Path) -> Path:
        value = self.text(name)
        return Path(value) if value else default

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {number}")
        return number

    def number(self, name: str, default: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
        if number <= 0:
            raise ConfigError(f"{name} must be greater than 0, got {value}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def hosts(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.text(name)
        if value is None:
            return default
        hosts = tuple(h.strip().lower() for h in value.split(",") if h.strip())
        if not hosts:
            raise ConfigError(f"{name} must list at least one host name")
        for host in hosts:
            bare = host.removeprefix("*.")
            if not bare or "/" in bare or ":" in bare or "*" in bare:
                raise ConfigError(
                    f"{name}: {host!r} is not a host name (use e.g. v3.fal.media or *.fal.media)"
                )
        return hosts

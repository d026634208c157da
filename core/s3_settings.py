"""The `FALBACK_S3_*` settings, parsed strictly into one typed object (docs/s3.md).

S3 is configured as soon as any `FALBACK_S3_*` variable is set; then the bucket and both
halves of the access key must be there and every value must be valid, or start-up stops
with a message naming the variable. Messages never contain the secret key (nor the
access key id: it names the account).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from core.env import ConfigError, EnvReader

MiB = 1024 * 1024
# S3's smallest part (all but the last); the largest we hold in memory is ours to choose.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 1024 * MiB
DEFAULT_PART_SIZE = 16 * MiB
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
CHECKSUMS = ("sha256", "crc32", "md5")

KNOWN = (
    "FALBACK_S3_BUCKET",
    "FALBACK_S3_ENDPOINT_URL",
    "FALBACK_S3_REGION",
    "FALBACK_S3_ACCESS_KEY_ID",
    "FALBACK_S3_SECRET_ACCESS_KEY",
    "FALBACK_S3_PREFIX",
    "FALBACK_S3_PART_SIZE",
    "FALBACK_S3_PATH_STYLE",
    "FALBACK_S3_PRESIGN_SECONDS",
    "FALBACK_S3_CHECKSUM",
    "FALBACK_S3_MAX_ATTEMPTS",
    "FALBACK_S3_TIMEOUT",
    "FALBACK_S3_ALLOW_HTTP",
)
_SIZE = re.compile(r"^(\d+)\s*(KiB|MiB|GiB|K|M|G)?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "kib": 1024, "m": MiB, "mib": MiB, "g": 1024 * MiB, "gib": 1024 * MiB}
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    # None: AWS itself (the endpoint follows from the region).
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # Every key starts with it: "" or a path ending in "/".
    prefix: str = "falback/"
    part_size: int = DEFAULT_PART_SIZE
    # Supabase and MinIO need https://host/bucket/key; AWS prefers https://bucket.host/key.
    path_style: bool = True
    presign_seconds: int = 3600
    # What each part and object carries so the server can refuse a corrupted body:
    # x-amz-checksum-sha256 / -crc32, or Content-MD5 (Backblaze B2 refuses the former).
    checksum: str = "sha256"
    # botocore's "standard" retries inside one attempt (the first try included), before
    # the job's own backoff takes over.
    max_attempts: int = 3
    timeout: float = 120.0

    def describe(self) -> str:
        """Where copies go, for logs and messages (no credentials)."""
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")


def parse_s3_settings(env: Mapping[str, str]) -> S3Settings | None:
    """S3 settings from the `FALBACK_S3_*` variables, or None when none is set."""
    names = [k for k in env if k.startswith("FALBACK_S3_") and env[k].strip()]
    if not names:
        return None
    for name in names:
        if name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{name} is not a falback setting{hint}")
    reader = EnvReader(env)
    for name in ("FALBACK_S3_BUCKET", "FALBACK_S3_ACCESS_KEY_ID", "FALBACK_S3_SECRET_ACCESS_KEY"):
        if reader.text(name) is None:
            raise ConfigError(
                f"{name} is missing (S3 needs FALBACK_S3_BUCKET, FALBACK_S3_ACCESS_KEY_ID"
                " and FALBACK_S3_SECRET_ACCESS_KEY; see docs/s3.md)"
            )
    endpoint = _endpoint(reader)
    defaults = S3Settings("", "", "")
    return S3Settings(
        bucket=_bucket(str(reader.text("FALBACK_S3_BUCKET"))),
        access_key_id=_key(reader, "FALBACK_S3_ACCESS_KEY_ID"),
        secret_access_key=_key(reader, "FALBACK_S3_SECRET_ACCESS_KEY"),
        endpoint_url=endpoint,
        region=_region(reader.text("FALBACK_S3_REGION") or defaults.region),
        prefix=_prefix(env.get("FALBACK_S3_PREFIX")),
        part_size=_part_size(reader.text("FALBACK_S3_PART_SIZE")),
        path_style=_path_style(reader, endpoint),
        presign_seconds=_presign_seconds(reader),
        checksum=_checksum(reader.text("FALBACK_S3_CHECKSUM")),
        max_attempts=_max_attempts(reader),
        timeout=reader.number("FALBACK_S3_TIMEOUT", defaults.timeout),
    )


def _key(reader: EnvReader, name: str) -> str:
    value = str(reader.text(name))
    if any(c.isspace() for c in value) or not value.isprintable():
        raise ConfigError(
            f"{name} contains spaces or control characters (copy the key again,"
            " without quotes or line breaks)"
        )
    return value


def _bucket(value: str) -> str:
    if value.startswith("s3://") or "/" in value:
        raise ConfigError(
            "FALBACK_S3_BUCKET must be a bucket name alone (e.g. fal-backups); put a"
            f" folder in FALBACK_S3_PREFIX instead, got {value!r}"
        )
    if not _BUCKET.match(value):
        raise ConfigError(
            f"FALBACK_S3_BUCKET must be a bucket name (letters, digits, '.', '-', '_'), got {value!r}"
        )
    return value


def _endpoint(reader: EnvReader) -> str | None:
    value = reader.text("FALBACK_S3_ENDPOINT_URL")
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(
            "FALBACK_S3_ENDPOINT_URL must be an https URL such as"
            f" https://<project>.supabase.co/storage/v1/s3, got {value!r}"
        )
    if parts.username or parts.password:
        raise ConfigError(
            "FALBACK_S3_ENDPOINT_URL must not contain credentials: use"
            " FALBACK_S3_ACCESS_KEY_ID and FALBACK_S3_SECRET_ACCESS_KEY"
        )
    if (
        parts.scheme == "http"
        and parts.hostname not in _LOOPBACK
        and not reader.boolean("FALBACK_S3_ALLOW_HTTP", False)
    ):
        raise ConfigError(
            "FALBACK_S3_ENDPOINT_URL uses plain http, which sends every file"
            " unencrypted: use https, or set FALBACK_S3_ALLOW_HTTP=true for a server"
            " on a private network"
        )
    if parts.hostname.endswith(".supabase.co") and parts.path.rstrip("/") != "/storage/v1/s3":
        raise ConfigError(
            "FALBACK_S3_ENDPOINT_URL: Supabase's S3 endpoint is"
            f" https://{parts.hostname}/storage/v1/s3 (Project Settings > Storage),"
            f" got {value!r}"
        )
    return value.rstrip("/")


def _region(value: str) -> str:
    if not _REGION.match(value):
        raise ConfigError(
            f"FALBACK_S3_REGION must be a region name such as us-east-1 (R2: auto), got {value!r}"
        )
    return value


def _prefix(raw: str | None) -> str:
    if raw is None or not raw.strip():
        return "falback/"
    value = raw.strip().strip("/")
    if value.startswith(".") or "//" in value or any(c in value for c in "\\\r\n\t"):
        raise ConfigError(
            f"FALBACK_S3_PREFIX must be a folder path such as falback/ (or / for the"
            f" bucket's top), got {raw!r}"
        )
    return f"{value}/" if value else ""


def _part_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PART_SIZE
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"FALBACK_S3_PART_SIZE must be a size in bytes (or e.g. 16MiB), got {value!r}")
    size = int(match[1]) * _UNITS[(match[2] or "").lower()]
    if size < MIN_PART_SIZE:
        raise ConfigError(
            f"FALBACK_S3_PART_SIZE must be at least 5 MiB ({MIN_PART_SIZE} bytes), S3's"
            f" smallest part, got {size}"
        )
    if size > MAX_PART_SIZE:
        raise ConfigError(
            f"FALBACK_S3_PART_SIZE must be at most 1 GiB (one part is held in memory), got {size}"
        )
    return size


def _path_style(reader: EnvReader, endpoint: str | None) -> bool:
    # A custom endpoint almost always wants path style (Supabase and MinIO need it).
    path_style = reader.boolean("FALBACK_S3_PATH_STYLE", endpoint is not None)
    if not path_style and endpoint and (urlsplit(endpoint).hostname or "").endswith(".supabase.co"):
        raise ConfigError(
            "FALBACK_S3_PATH_STYLE must be true for Supabase Storage (it serves"
            " buckets only as https://<project>.supabase.co/storage/v1/s3/<bucket>)"
        )
    return path_style


def _presign_seconds(reader: EnvReader) -> int:
    seconds = reader.integer("FALBACK_S3_PRESIGN_SECONDS", 3600, minimum=1)
    if seconds > MAX_PRESIGN_SECONDS:
        raise ConfigError(
            f"FALBACK_S3_PRESIGN_SECONDS must be at most {MAX_PRESIGN_SECONDS}"
            f" (7 days, the longest a signed URL can live), got {seconds}"
        )
    return seconds


def _checksum(value: str | None) -> str:
    if value is None:
        return "sha256"
    if value.lower() not in CHECKSUMS:
        raise ConfigError(
            f"FALBACK_S3_CHECKSUM must be one of {', '.join(CHECKSUMS)} (md5 for Backblaze B2), got {value!r}"
        )
    return value.lower()


def _max_attempts(reader: EnvReader) -> int:
    attempts = reader.integer("FALBACK_S3_MAX_ATTEMPTS", 3, minimum=1)
    if attempts > 10:
        raise ConfigError(
            f"FALBACK_S3_MAX_ATTEMPTS must be at most 10 (the job retries later anyway), got {attempts}"
        )
    return attempts

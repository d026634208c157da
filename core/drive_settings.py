"""The `GOOGLE_DRIVE_*` settings, parsed strictly into one typed object.

Drive is the destination as soon as any `GOOGLE_DRIVE_*` variable is set; then a
service-account key must be found (the separate variables of the user's note, or a JSON
key file) and every value must be valid, or start-up stops with a message naming the
variable. Messages never contain the key itself.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.drive_oauth_settings import (
    GOOGLE_AUTH_URI,
    GOOGLE_DEVICE_CODE_URI,
    OAUTH_NAMES,
    oauth_fields,
    wants_oauth,
)
from core.env import ConfigError, EnvReader

GOOGLE_API_BASE_URL = "https://www.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
SCOPE_PREFIX = "https://www.googleapis.com/auth/"
DEFAULT_SCOPE = SCOPE_PREFIX + "drive"
FILE_SCOPE = SCOPE_PREFIX + "drive.file"  # the personal-account mode's default
# Drive's resumable-upload unit: every chunk but the last is a multiple of it.
CHUNK_UNIT = 256 * 1024
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
KEY_FILE_FALLBACK = "GOOGLE_APPLICATION_CREDENTIALS"

KNOWN = (
    "GOOGLE_DRIVE_PROJECT_ID",
    "GOOGLE_DRIVE_PRIVATE_KEY_ID",
    "GOOGLE_DRIVE_PRIVATE_KEY",
    "GOOGLE_DRIVE_CLIENT_EMAIL",
    "GOOGLE_DRIVE_CLIENT_ID",
    "GOOGLE_DRIVE_FOLDER_ID",
    "GOOGLE_DRIVE_KEY_FILE",
    "GOOGLE_DRIVE_IMPERSONATE",
    "GOOGLE_DRIVE_SCOPE",
    "GOOGLE_DRIVE_CHUNK_SIZE",
    "GOOGLE_DRIVE_SHARE_ANYONE",
    "GOOGLE_DRIVE_MAX_RETRIES",
    "GOOGLE_DRIVE_RETRY_BASE_SECONDS",
    "GOOGLE_DRIVE_TIMEOUT",
    "GOOGLE_DRIVE_UPLOAD_CAP_PAUSE",
    "GOOGLE_DRIVE_API_BASE_URL",
    "GOOGLE_DRIVE_TOKEN_URI",
    *OAUTH_NAMES,
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SIZE = re.compile(r"^(\d+)\s*(KiB|MiB|K|M)?$", re.IGNORECASE)


@dataclass(frozen=True)
class DriveSettings:
    client_email: str
    private_key: str = field(repr=False)
    key_source: str  # where the key came from, for messages: a variable name or a file
    private_key_id: str | None = None
    project_id: str | None = None
    client_id: str | None = None
    folder_id: str | None = None  # None: the root of the (impersonated) account's My Drive
    impersonate: str | None = None
    scope: str = DEFAULT_SCOPE
    chunk_size: int = DEFAULT_CHUNK_SIZE
    share_anyone: bool = False
    # Bounded backoff inside one upload before the job's own retry takes over.
    max_retries: int = 5
    retry_base_seconds: float = 1.0
    timeout: float = 120.0
    # How long Drive uploads pause after the 750 GB/day cap answers; the first job after
    # the pause probes again. Drive does not say when the 24-hour window resets.
    upload_cap_pause: int = 3600
    # Tests and the offline emulator only; production always talks to Google.
    api_base_url: str = GOOGLE_API_BASE_URL
    token_uri: str = GOOGLE_TOKEN_URI
    # "service_account", or "oauth": a personal Google account signed in by drive-login.
    mode: str = "service_account"
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    token_key: str | None = field(default=None, repr=False)  # FALBACK_TOKEN_KEY (Fernet)
    device_code_uri: str = GOOGLE_DEVICE_CODE_URI
    auth_uri: str = GOOGLE_AUTH_URI  # the consent page, for scopes the device flow refuses

    @property
    def personal(self) -> bool:
        return self.mode == "oauth"

    def service_account_info(self) -> dict[str, str]:
        """The dict google-auth's `from_service_account_info` expects."""
        info = {
            "type": "service_account",
            "client_email": self.client_email,
            "private_key": self.private_key,
            "token_uri": self.token_uri,
        }
        optional = {
            "private_key_id": self.private_key_id,
            "project_id": self.project_id,
            "client_id": self.client_id,
        }
        info.update({k: v for k, v in optional.items() if v})
        return info


def parse_drive_settings(env: Mapping[str, str]) -> DriveSettings | None:
    """Drive settings from the `GOOGLE_DRIVE_*` variables (and GOOGLE_APPLICATION_CREDENTIALS
    as a fallback key file), or None when no `GOOGLE_DRIVE_*` variable is set."""
    names = [k for k in env if k.startswith("GOOGLE_DRIVE_") and env[k].strip()]
    if not names:
        return None
    for name in names:
        if name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{name} is not a falback setting{hint}")
    reader = EnvReader(env)
    oauth = wants_oauth(reader)
    key = (
        {
            **oauth_fields(reader),
            "client_email": "",
            "private_key": "",
            "key_source": "GOOGLE_DRIVE_OAUTH_CLIENT_ID",
            "token_uri": GOOGLE_TOKEN_URI,
        }
        if oauth
        else _key(reader, env)
    )
    impersonate = reader.text("GOOGLE_DRIVE_IMPERSONATE")
    if impersonate and not _EMAIL.match(impersonate):
        raise ConfigError(f"GOOGLE_DRIVE_IMPERSONATE must be a user's email address, got {impersonate!r}")
    defaults = DriveSettings("", "", "")
    token_uri = key.pop("token_uri")
    max_retries = reader.integer("GOOGLE_DRIVE_MAX_RETRIES", defaults.max_retries, minimum=0)
    return DriveSettings(
        **key,
        folder_id=reader.text("GOOGLE_DRIVE_FOLDER_ID"),
        impersonate=impersonate,
        scope=_scope(reader.text("GOOGLE_DRIVE_SCOPE"), FILE_SCOPE if oauth else DEFAULT_SCOPE),
        chunk_size=_chunk_size(reader.text("GOOGLE_DRIVE_CHUNK_SIZE")),
        share_anyone=reader.boolean("GOOGLE_DRIVE_SHARE_ANYONE", False),
        max_retries=max_retries,
        retry_base_seconds=reader.number("GOOGLE_DRIVE_RETRY_BASE_SECONDS", defaults.retry_base_seconds),
        timeout=reader.number("GOOGLE_DRIVE_TIMEOUT", defaults.timeout),
        upload_cap_pause=reader.integer(
            "GOOGLE_DRIVE_UPLOAD_CAP_PAUSE", defaults.upload_cap_pause, minimum=1
        ),
        api_base_url=_test_url(reader, "GOOGLE_DRIVE_API_BASE_URL", GOOGLE_API_BASE_URL, path=False),
        token_uri=_test_url(reader, "GOOGLE_DRIVE_TOKEN_URI", token_uri, path=True),
        device_code_uri=_test_url(reader, "GOOGLE_DRIVE_DEVICE_CODE_URI", GOOGLE_DEVICE_CODE_URI, path=True),
        auth_uri=_test_url(reader, "GOOGLE_DRIVE_AUTH_URI", GOOGLE_AUTH_URI, path=True),
    )


def _key(reader: EnvReader, env: Mapping[str, str]) -> dict[str, Any]:
    """client_email, private_key and the optional key fields, from variables or a file."""
    inline = {
        name: reader.text(name)
        for name in (
            "GOOGLE_DRIVE_PRIVATE_KEY",
            "GOOGLE_DRIVE_CLIENT_EMAIL",
            "GOOGLE_DRIVE_PRIVATE_KEY_ID",
            "GOOGLE_DRIVE_PROJECT_ID",
            "GOOGLE_DRIVE_CLIENT_ID",
        )
    }
    key_file = reader.text("GOOGLE_DRIVE_KEY_FILE")
    has_inline = bool(inline["GOOGLE_DRIVE_PRIVATE_KEY"] or inline["GOOGLE_DRIVE_CLIENT_EMAIL"])
    if key_file and has_inline:
        raise ConfigError(
            "set either GOOGLE_DRIVE_KEY_FILE or GOOGLE_DRIVE_PRIVATE_KEY and"
            " GOOGLE_DRIVE_CLIENT_EMAIL, not both"
        )
    if has_inline:
        for name in ("GOOGLE_DRIVE_PRIVATE_KEY", "GOOGLE_DRIVE_CLIENT_EMAIL"):
            if not inline[name]:
                raise ConfigError(
                    f"{name} is missing (the service account key needs"
                    " GOOGLE_DRIVE_PRIVATE_KEY and GOOGLE_DRIVE_CLIENT_EMAIL)"
                )
        return _checked_key(
            "GOOGLE_DRIVE_PRIVATE_KEY",
            "GOOGLE_DRIVE_CLIENT_EMAIL",
            client_email=inline["GOOGLE_DRIVE_CLIENT_EMAIL"],
            private_key=_unescape(str(inline["GOOGLE_DRIVE_PRIVATE_KEY"])),
            private_key_id=inline["GOOGLE_DRIVE_PRIVATE_KEY_ID"],
            project_id=inline["GOOGLE_DRIVE_PROJECT_ID"],
            client_id=inline["GOOGLE_DRIVE_CLIENT_ID"],
            token_uri=GOOGLE_TOKEN_URI,
        )
    name = "GOOGLE_DRIVE_KEY_FILE" if key_file else KEY_FILE_FALLBACK
    path = key_file or (env.get(KEY_FILE_FALLBACK) or "").strip()
    if not path:
        raise ConfigError(
            "Google Drive settings are set but no service-account key: set GOOGLE_DRIVE_PRIVATE_KEY"
            " and GOOGLE_DRIVE_CLIENT_EMAIL, or GOOGLE_DRIVE_KEY_FILE (a JSON key file)"
        )
    return _key_file(name, Path(path))


def _key_file(name: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{name}: cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(f"{name}: {path} is not a JSON key file") from None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        raise ConfigError(
            f'{name}: {path} is not a service-account key (its "type" must be'
            ' "service_account"; download a JSON key of the service account)'
        )
    for required in ("client_email", "private_key"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise ConfigError(f"{name}: {path} has no {required}")
    source = f"{name} ({path})"
    return _checked_key(
        source,
        source,
        client_email=data["client_email"],
        private_key=data["private_key"],
        private_key_id=data.get("private_key_id"),
        project_id=data.get("project_id"),
        client_id=data.get("client_id"),
        token_uri=data.get("token_uri") or GOOGLE_TOKEN_URI,
    )


def _checked_key(key_name: str, email_name: str, **key: Any) -> dict[str, Any]:
    if not _EMAIL.match(str(key["client_email"])):
        raise ConfigError(
            f"{email_name}: the client email must look like name@project.iam.gserviceaccount.com"
        )
    try:
        from google.auth.crypt import RSASigner

        RSASigner.from_string(key["private_key"])  # type: ignore[no-untyped-call]
    except (ValueError, TypeError, IndexError):
        raise ConfigError(
            f"{key_name}: the private key is not a PEM RSA key (it must run from"
            " -----BEGIN PRIVATE KEY----- to -----END PRIVATE KEY-----; escaped \\n become newlines)"
        ) from None
    return {"key_source": key_name, **key}


def _unescape(value: str) -> str:
    """The key as pasted into an env file: maybe quoted, with literal backslash-n."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.replace("\\r\\n", "\n").replace("\\n", "\n").replace("\r\n", "\n")


def _scope(value: str | None, default: str) -> str:
    if value is None:
        return default
    scope = value if value.startswith("https://") else SCOPE_PREFIX + value
    if not scope.startswith(SCOPE_PREFIX + "drive"):
        raise ConfigError(
            f"GOOGLE_DRIVE_SCOPE must be a Drive scope such as 'drive' or 'drive.file', got {value!r}"
        )
    return scope


def _chunk_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_CHUNK_SIZE
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"GOOGLE_DRIVE_CHUNK_SIZE must be a size in bytes (or e.g. 16MiB), got {value!r}")
    unit = (match[2] or "").lower()
    size = int(match[1]) * {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}[unit]
    if size < CHUNK_UNIT or size % CHUNK_UNIT:
        raise ConfigError(
            f"GOOGLE_DRIVE_CHUNK_SIZE must be a multiple of 256 KiB ({CHUNK_UNIT} bytes), got {size}"
        )
    if size > 1024**3:
        raise ConfigError(
            f"GOOGLE_DRIVE_CHUNK_SIZE must be at most 1 GiB (one chunk is held in memory), got {size}"
        )
    return size


def _test_url(reader: EnvReader, name: str, default: str, *, path: bool) -> str:
    value = reader.text(name)
    if value is None:
        return default
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    plain_ok = parts.scheme == "https" or (parts.scheme == "http" and loopback)
    if not parts.hostname or not plain_ok:
        raise ConfigError(
            f"{name} must be an https URL (or http on loopback, for the emulator), got {value!r}"
        )
    if not path and parts.path.strip("/"):
        raise ConfigError(
            f"{name} must be a base URL without a path (e.g. http://127.0.0.1:8555), got {value!r}"
        )
    return value.rstrip("/")

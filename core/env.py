"""Strict parsers for environment variables, in the manner of Healthchecks' envbool/envint.

Every message names the variable and what is wrong with its value, and never repeats a
secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


class EnvReader:
    """Reads one environment mapping; each method parses one variable or raises ConfigError."""

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

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """One of `choices`, matched case-insensitively, returned as spelled there."""
        value = self.text(name)
        if value is None:
            return default
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def urls(self, name: str, default: tuple[str, ...], *, single: bool = False) -> tuple[str, ...]:
        """Comma-separated http(s) URLs (exactly one when `single`)."""
        value = self.text(name)
        if value is None:
            return default
        urls = tuple(u.strip() for u in value.split(",") if u.strip())
        if not urls or (single and len(urls) > 1):
            raise ConfigError(f"{name} must be {'one URL' if single else 'a comma-separated list of URLs'}")
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise ConfigError(f"{name}: {url!r} is not an http(s) URL without query or fragment")
        return urls

    def webhook_secret(self, name: str) -> str | None:
        """A Standard Webhooks secret: whsec_ then base64 of at least 16 random bytes."""
        value = self.text(name)
        if value is None:
            return None
        try:
            key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not value.startswith("whsec_") or len(key) < 16:
            raise ConfigError(
                f"{name} must be whsec_ followed by base64 of at least 16 random bytes; make one"
                ' with python3 -c "import base64, os;'
                " print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
            )
        return value

    def names(self, name: str, choices: tuple[str, ...]) -> tuple[str, ...] | None:
        """A comma-separated list of distinct `choices` (case-insensitive), in its order;
        None when unset."""
        value = self.text(name)
        if value is None:
            return None
        names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
        if not names:
            raise ConfigError(f"{name} must list at least one of {', '.join(choices)}")
        for n in names:
            if n not in choices:
                raise ConfigError(f"{name}: {n!r} is not one of {', '.join(choices)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"{name} names one more than once: {value!r}")
        return names

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

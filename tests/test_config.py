"""Config: read once from the environment, strict, with messages naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import DEFAULT_SOURCE_HOSTS, Config, ConfigError
from tests.drive_helpers import write_key_file


def test_defaults_need_nothing_set() -> None:
    config = Config.from_env({})
    assert config.database_url is None and config.redis_url is None
    assert config.source_hosts == DEFAULT_SOURCE_HOSTS
    assert config.allow_loopback_sources is False
    assert config.retry_intervals() == [30, 120, 480, 1920]


def test_it_reads_every_variable_and_round_trips_through_as_env(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://r:6379/1",
        "FALBACK_ADMIN_TOKEN": "t", "FALBACK_SOURCE_HOSTS": "v3.fal.media, *.example.com",
        "FALBACK_ALLOW_LOOPBACK_SOURCES": "yes", "FALBACK_MAX_ATTEMPTS": "7",
        "FALBACK_RETRY_BASE_SECONDS": "5", "FALBACK_BACKUP_DIR": str(tmp_path),
        "FALBACK_READ_TIMEOUT": "1.5", "GOOGLE_DRIVE_FOLDER_ID": "abc",
        "GOOGLE_DRIVE_KEY_FILE": str(write_key_file(tmp_path / "key.json")),
        "FALBACK_S3_BUCKET": "fal-backups", "FALBACK_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "FALBACK_S3_SECRET_ACCESS_KEY": "secret", "FALBACK_S3_REGION": "eu-central-1",
        "FALBACK_S3_ENDPOINT_URL": "https://abcdefghijklmnop.supabase.co/storage/v1/s3",
        "FALBACK_S3_PREFIX": "backups/", "FALBACK_S3_PART_SIZE": "8MiB", "FALBACK_S3_PATH_STYLE": "true",
        "FALBACK_S3_PRESIGN_SECONDS": "900",
    }
    config = Config.from_env(env)
    assert config.source_hosts == ("v3.fal.media", "*.example.com")
    assert config.allow_loopback_sources and config.max_attempts == 7 and config.read_timeout == 1.5
    assert config.retry_intervals() == [5, 20, 80, 320, 1280, 5120]
    assert config.google == {"GOOGLE_DRIVE_FOLDER_ID": "abc",
                             "GOOGLE_DRIVE_KEY_FILE": env["GOOGLE_DRIVE_KEY_FILE"]}
    assert config.drive is not None and config.drive.folder_id == "abc"
    assert config.s3 is not None and config.s3.part_size == 8 * 1024 * 1024
    assert config.s3.prefix == "backups/" and config.s3.presign_seconds == 900
    assert Config.from_env(config.as_env()) == config
    assert Config.from_env(config.as_env()).s3 == config.s3


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FALBACK_MAX_ATTEMPTS", "three", "FALBACK_MAX_ATTEMPTS must be a whole number, got 'three'"),
        ("FALBACK_MAX_ATTEMPTS", "0", "FALBACK_MAX_ATTEMPTS must be at least 1, got 0"),
        ("FALBACK_READ_TIMEOUT", "-2", "FALBACK_READ_TIMEOUT must be greater than 0"),
        ("FALBACK_READ_TIMEOUT", "soon", "FALBACK_READ_TIMEOUT must be a number of seconds"),
        ("FALBACK_ALLOW_LOOPBACK_SOURCES", "maybe", "must be true or false, got 'maybe'"),
        ("FALBACK_SOURCE_HOSTS", "https://fal.media/x", "is not a host name"),
        ("FALBACK_SOURCE_HOSTS", " , ", "must list at least one host name"),
        ("FALBACK_SOURCE_HOSTS", "*", "is not a host name"),
    ],
)
def test_bad_values_stop_start_up_with_a_clear_message(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Config.from_env({name: value})

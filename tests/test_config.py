"""Config: read once from the environment, strict, with messages naming the variable."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from core.config import DEFAULT_SOURCE_HOSTS, Config, ConfigError, DailyBackfill
from core.drive_oauth_settings import OAUTH_NAMES
from core.drive_settings import DEFAULT_SCOPE, KNOWN, DriveSettings
from tests.support.drive import SA_EMAIL, make_key, write_key_file


def test_defaults_need_nothing_set() -> None:
    config = Config.from_env({})
    assert config.database_url is None and config.redis_url is None
    assert config.source_hosts == DEFAULT_SOURCE_HOSTS
    assert config.allow_loopback_sources is False
    assert config.retry_intervals() == [30, 120, 480, 1920]


# Every variable Config.from_env reads, each with a value other than its default, and
# the field it sets. GOOGLE_DRIVE_* (kept raw in `google`, parsed into `drive`) come below.
EVERY_VARIABLE = {
    "DATABASE_URL": ("postgresql://u@db/x", "database_url"),
    "REDIS_URL": ("redis://r:6379/1", "redis_url"),
    "FALBACK_DATA_DIR": ("/srv/falback", "data_dir"),
    "FALBACK_ADMIN_TOKEN": ("t", "admin_token"),
    "FALBACK_PUBLIC_URL": ("https://falback.example.com", "public_url"),
    "FALBACK_MAX_BACKFILL_LIMIT": ("500", "max_backfill_limit"),
    "WEB_THREADS": ("7", "web_db_connections"),
    "FALBACK_SOURCE_HOSTS": ("v3.fal.media, *.example.com", "source_hosts"),
    "FALBACK_ALLOW_LOOPBACK_SOURCES": ("yes", "allow_loopback_sources"),
    "FALBACK_CONNECT_TIMEOUT": ("2.5", "connect_timeout"),
    "FALBACK_READ_TIMEOUT": ("1.5", "read_timeout"),
    "FALBACK_FETCH_CHUNK_SIZE": ("65536", "fetch_chunk_size"),
    "FALBACK_FETCH_RESUME_ATTEMPTS": ("0", "fetch_resume_attempts"),
    "FALBACK_BACKUP_DIR": ("/srv/backups", "backup_dir"),
    "FALBACK_DESTINATIONS": ("S3, drive", "destinations"),
    "FALBACK_DISK_FULL_PAUSE": ("60", "disk_full_pause_seconds"),
    "FALBACK_MAX_ATTEMPTS": ("7", "max_attempts"),
    "FALBACK_RETRY_BASE_SECONDS": ("5", "retry_base_seconds"),
    "FALBACK_JOB_TIMEOUT": ("600", "job_timeout_seconds"),
    "FALBACK_EXPIRY_DAYS": ("3", "expiry_days"),
    "FALBACK_MISSING_RETRY_SECONDS": ("600", "missing_retry_seconds"),
    "FALBACK_SWEEP_INTERVAL": ("45", "sweep_interval_seconds"),
    "FALBACK_SWEEP_LIMIT": ("250", "sweep_limit"),
    "FALBACK_QUEUE_WINDOW": ("3", "queue_window_per_worker"),
    "FALBACK_DAILY_BACKFILL": ("03:15 images 20", "daily_backfill"),
    "FALBACK_VERIFY_SCHEDULE": ("30 5 * * 1", "verify_schedule"),
    "FAL_WEBHOOK_USER_ID": ("user-1", "fal_webhook_user_id"),
    "FAL_JWKS_URLS": ("https://a.example/jwks.json, http://127.0.0.1:9/j", "fal_jwks_urls"),
    "FAL_KEY": ("id:secret", "fal_key"),
    "FAL_QUEUE_BASE_URL": ("https://queue.example/", "fal_queue_base_url"),
    "FAL_REST_BASE_URL": ("https://rest.example", "fal_rest_base_url"),
    "FAL_CDN_TOKEN_HOSTS": ("*.private.example", "fal_cdn_token_hosts"),
    "FALBACK_MAX_DATA_URI_BYTES": ("2048", "max_data_uri_bytes"),
    "FALBACK_APP_WEBHOOK_SECRET": ("whsec_" + base64.b64encode(b"k" * 24).decode(), "app_webhook_secret"),
    "FALBACK_LOG_LEVEL": ("debug", "log_level"),
    "LOG_FORMAT": ("JSON", "log_format"),
}
S3_SETTINGS = {
    "FALBACK_S3_BUCKET": "fal-backups",
    "FALBACK_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "FALBACK_S3_SECRET_ACCESS_KEY": "secret",
    "FALBACK_S3_REGION": "eu-central-1",
    "FALBACK_S3_ENDPOINT_URL": "https://abcdefghijklmnop.supabase.co/storage/v1/s3",
    "FALBACK_S3_PREFIX": "backups/",
    "FALBACK_S3_PART_SIZE": "8MiB",
    "FALBACK_S3_PATH_STYLE": "true",
    "FALBACK_S3_PRESIGN_SECONDS": "900",
}
DRIVE_SETTINGS = {
    "GOOGLE_DRIVE_FOLDER_ID": "abc",
    "GOOGLE_DRIVE_IMPERSONATE": "alice@example.com",
    "GOOGLE_DRIVE_SCOPE": "drive.file",
    "GOOGLE_DRIVE_CHUNK_SIZE": "8MiB",
    "GOOGLE_DRIVE_SHARE_ANYONE": "true",
    "GOOGLE_DRIVE_MAX_RETRIES": "2",
    "GOOGLE_DRIVE_RETRY_BASE_SECONDS": "0.5",
    "GOOGLE_DRIVE_TIMEOUT": "30",
    "GOOGLE_DRIVE_UPLOAD_CAP_PAUSE": "60",
    "GOOGLE_DRIVE_API_BASE_URL": "http://127.0.0.1:8555",
    "GOOGLE_DRIVE_TOKEN_URI": "http://127.0.0.1:8555/token",
}


def drive_key_variables(source: str, tmp_path: Path) -> dict[str, str]:
    """The service-account key, as the user's note's variables or as a JSON key file."""
    key = make_key()
    if source == "variables":
        return {
            "GOOGLE_DRIVE_PROJECT_ID": "demo-project",
            "GOOGLE_DRIVE_PRIVATE_KEY_ID": "k1",
            "GOOGLE_DRIVE_PRIVATE_KEY": key.private_pem.replace("\n", "\\n"),
            "GOOGLE_DRIVE_CLIENT_EMAIL": SA_EMAIL,
            "GOOGLE_DRIVE_CLIENT_ID": "123",
        }
    path = str(write_key_file(tmp_path / "key.json", key))
    # GOOGLE_APPLICATION_CREDENTIALS is the fallback key file: read, and passed on, too.
    return {"GOOGLE_DRIVE_KEY_FILE": path, "GOOGLE_APPLICATION_CREDENTIALS": path}


@pytest.mark.parametrize("key_source", ["variables", "file"])
def test_it_reads_every_variable_and_round_trips_through_as_env(key_source: str, tmp_path: Path) -> None:
    env = {name: value for name, (value, _) in EVERY_VARIABLE.items()}
    drive = {**DRIVE_SETTINGS, **drive_key_variables(key_source, tmp_path)}
    config = Config.from_env({**env, **drive, **S3_SETTINGS})
    defaults = Config()

    # Each variable reached its field, and every field has a variable here.
    for name, (_, field) in EVERY_VARIABLE.items():
        assert getattr(config, field) != getattr(defaults, field), f"{name} was not read"
    fields = {f.name for f in dataclasses.fields(Config) if f.init}
    assert fields - {field for _, field in EVERY_VARIABLE.values()} == {"google", "s3_env"}
    assert config.google == drive and config.s3_env == S3_SETTINGS
    assert config.s3 is not None and config.s3.part_size == 8 * 1024 * 1024
    assert config.s3.prefix == "backups/" and config.s3.presign_seconds == 900
    assert config.drive is not None
    drive_defaults = DriveSettings("", "", "")
    # The personal-account (OAuth) fields go with the other mode: tests/test_drive_oauth_settings.py.
    oauth_only = {
        "mode",
        "oauth_client_id",
        "oauth_client_secret",
        "token_key",
        "device_code_uri",
        "auth_uri",
    }
    assert [
        f.name
        for f in dataclasses.fields(DriveSettings)
        if f.name not in oauth_only and getattr(config.drive, f.name) == getattr(drive_defaults, f.name)
    ] == []
    # Parsed, not just stored.
    assert config.source_hosts == ("v3.fal.media", "*.example.com")
    assert config.allow_loopback_sources is True and config.read_timeout == 1.5
    assert config.daily_backfill == DailyBackfill(3, 15, "images", 20)
    assert config.destinations == config.destination_names == ("s3", "drive")
    assert config.fal_queue_base_url == "https://queue.example"
    assert config.retry_intervals() == [5, 20, 80, 320, 1280, 5120]
    assert (config.drive.chunk_size, config.drive.scope) == (8 * 1024 * 1024, DEFAULT_SCOPE + ".file")

    # as_env writes every variable back, and each comes back as it was.
    written = config.as_env()
    assert set(written) == set(env) | set(drive) | set(S3_SETTINGS)
    rebuilt = Config.from_env(written)
    for name, (_, field) in EVERY_VARIABLE.items():
        assert getattr(rebuilt, field) == getattr(config, field), name
    assert rebuilt == config and rebuilt.drive == config.drive and rebuilt.s3 == config.s3


def test_every_drive_variable_is_covered_above(tmp_path: Path) -> None:
    covered = set(DRIVE_SETTINGS) | set(drive_key_variables("variables", tmp_path))
    covered |= set(OAUTH_NAMES)  # the personal-account mode: tests/test_drive_oauth_settings.py
    assert covered | set(drive_key_variables("file", tmp_path)) >= set(KNOWN)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FALBACK_MAX_ATTEMPTS", "three", "FALBACK_MAX_ATTEMPTS must be a whole number, got 'three'"),
        ("FALBACK_MAX_ATTEMPTS", "0", "FALBACK_MAX_ATTEMPTS must be at least 1, got 0"),
        ("FALBACK_QUEUE_WINDOW", "0", "FALBACK_QUEUE_WINDOW must be at least 1, got 0"),
        ("FALBACK_READ_TIMEOUT", "-2", "FALBACK_READ_TIMEOUT must be greater than 0"),
        ("FALBACK_READ_TIMEOUT", "soon", "FALBACK_READ_TIMEOUT must be a number of seconds"),
        ("FALBACK_ALLOW_LOOPBACK_SOURCES", "maybe", "must be true or false, got 'maybe'"),
        ("FALBACK_SOURCE_HOSTS", "https://fal.media/x", "is not a host name"),
        ("FALBACK_SOURCE_HOSTS", " , ", "must list at least one host name"),
        ("FALBACK_SOURCE_HOSTS", "*", "is not a host name"),
        (
            "FALBACK_DESTINATIONS",
            "drive,dropbox",
            "FALBACK_DESTINATIONS: 'dropbox' is not one of local, drive, s3",
        ),
        ("FALBACK_DESTINATIONS", " , ", "FALBACK_DESTINATIONS must list at least one of local, drive, s3"),
        ("FALBACK_DESTINATIONS", "local,LOCAL", "FALBACK_DESTINATIONS names one more than once"),
        (
            "FALBACK_DESTINATIONS",
            "local,s3",
            "FALBACK_DESTINATIONS names s3, which is not configured: set FALBACK_S3_",
        ),
        (
            "FALBACK_DESTINATIONS",
            "drive",
            "FALBACK_DESTINATIONS names drive, which is not configured: set GOOGLE_DRIVE_",
        ),
    ],
)
def test_bad_values_stop_start_up_with_a_clear_message(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Config.from_env({name: value})


def test_destinations_default_to_the_one_configured(tmp_path: Path) -> None:
    """Unset, one destination as before: Drive when configured, else S3, else the folder;
    set, every destination it lists, in its order, each of them configured."""
    assert Config.from_env({}).destination_names == ("local",)
    s3_only = Config.from_env(S3_SETTINGS)
    assert s3_only.destinations is None and s3_only.destination_names == ("s3",)
    drive = drive_key_variables("variables", tmp_path)
    assert Config.from_env({**drive, **S3_SETTINGS}).destination_names == ("drive",)
    listed = Config.from_env({**S3_SETTINGS, "FALBACK_DESTINATIONS": "local, s3"})
    assert listed.destination_names == ("local", "s3")
    # Checked however the Config is made, not only from the environment.
    with pytest.raises(ConfigError, match="names drive, which is not configured"):
        s3_only.replace(destinations=("s3", "drive"))

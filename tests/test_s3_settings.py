"""FALBACK_S3_* settings: defaults per provider, strict validation with messages that name
the variable, and never the secret (nor the access key id) in a repr or a message."""

from __future__ import annotations

import pytest

from core.config import Config, ConfigError
from core.s3_settings import DEFAULT_PART_SIZE, S3Settings

KEY_ID = "AKIAEXAMPLEKEYID0001"
SECRET = "s3cr3t/with+signs=0123456789abcdefghij"
SUPABASE = "https://abcdefghijklmnop.supabase.co/storage/v1/s3"


def env(**extra: str) -> dict[str, str]:
    return {
        "FALBACK_S3_BUCKET": "fal-backups",
        "FALBACK_S3_ACCESS_KEY_ID": KEY_ID,
        "FALBACK_S3_SECRET_ACCESS_KEY": SECRET,
        **extra,
    }


def settings(**extra: str) -> S3Settings:
    parsed = Config.from_env(env(**extra)).s3
    assert parsed is not None
    return parsed


def test_nothing_set_means_no_s3() -> None:
    assert Config.from_env({}).s3 is None and Config().s3 is None


def test_aws_defaults() -> None:
    s3 = settings()
    assert (s3.bucket, s3.endpoint_url, s3.region, s3.prefix) == (
        "fal-backups",
        None,
        "us-east-1",
        "falback/",
    )
    assert (s3.part_size, s3.path_style, s3.presign_seconds, s3.checksum) == (
        DEFAULT_PART_SIZE,
        False,
        3600,
        "sha256",
    )  # AWS: virtual-hosted addressing
    assert (s3.access_key_id, s3.secret_access_key) == (KEY_ID, SECRET)


def test_supabase_and_every_variable_round_trip() -> None:
    config = Config.from_env(
        env(
            FALBACK_S3_ENDPOINT_URL=SUPABASE + "/",
            FALBACK_S3_REGION="eu-central-1",
            FALBACK_S3_PREFIX="/backups/fal/",
            FALBACK_S3_PART_SIZE="8MiB",
            FALBACK_S3_PRESIGN_SECONDS="600",
            FALBACK_S3_CHECKSUM="CRC32",
            FALBACK_S3_MAX_ATTEMPTS="5",
            FALBACK_S3_TIMEOUT="30",
        )
    )
    s3 = config.s3
    assert s3 is not None
    assert (s3.endpoint_url, s3.region, s3.prefix, s3.part_size) == (
        SUPABASE,
        "eu-central-1",
        "backups/fal/",
        8 * 1024 * 1024,
    )
    assert s3.path_style  # a custom endpoint: path style unless told otherwise
    assert (s3.presign_seconds, s3.checksum, s3.max_attempts, s3.timeout) == (600, "crc32", 5, 30.0)
    assert Config.from_env(config.as_env()).s3 == s3


@pytest.mark.parametrize(("prefix", "expected"), [("/", ""), ("a/b", "a/b/"), ("falback/", "falback/")])
def test_the_prefix_is_a_folder_or_nothing(prefix: str, expected: str) -> None:
    assert settings(FALBACK_S3_PREFIX=prefix).prefix == expected


def test_secrets_stay_out_of_repr() -> None:
    config = Config.from_env(env())
    assert SECRET not in repr(config) and KEY_ID not in repr(config)
    assert SECRET not in repr(config.s3) and "fal-backups" in repr(config.s3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"FALBACK_S3_BUCKET": ""}, "FALBACK_S3_BUCKET is missing"),
        ({"FALBACK_S3_SECRET_ACCESS_KEY": " "}, "FALBACK_S3_SECRET_ACCESS_KEY is missing"),
        ({"FALBACK_S3_ACCESS_KEY_ID": "AKIA EXAMPLE"}, "FALBACK_S3_ACCESS_KEY_ID contains spaces"),
        ({"FALBACK_S3_SECRET_ACCESS_KEY": "ab\x01cd"}, "FALBACK_S3_SECRET_ACCESS_KEY contains spaces"),
        ({"FALBACK_S3_BUCKET": "fal/backups"}, "put a folder in FALBACK_S3_PREFIX"),
        ({"FALBACK_S3_BUCKET": "s3://fal"}, "must be a bucket name alone"),
        (
            {"FALBACK_S3_BUKET": "x"},
            "FALBACK_S3_BUKET is not a falback setting (did you mean FALBACK_S3_BUCKET?)",
        ),
        ({"FALBACK_S3_ENDPOINT_URL": "abcdefghijklmnop.supabase.co"}, "must be an https URL"),
        (
            {"FALBACK_S3_ENDPOINT_URL": "https://abcdefghijklmnop.supabase.co"},
            "Supabase's S3 endpoint is https://abcdefghijklmnop.supabase.co/storage/v1/s3",
        ),
        ({"FALBACK_S3_ENDPOINT_URL": "http://minio.internal:9000"}, "FALBACK_S3_ALLOW_HTTP=true"),
        ({"FALBACK_S3_ENDPOINT_URL": "https://key:pw@example.com"}, "must not contain credentials"),
        (
            {"FALBACK_S3_ENDPOINT_URL": SUPABASE, "FALBACK_S3_PATH_STYLE": "false"},
            "FALBACK_S3_PATH_STYLE must be true for Supabase",
        ),
        ({"FALBACK_S3_PATH_STYLE": "sometimes"}, "FALBACK_S3_PATH_STYLE must be true or false"),
        ({"FALBACK_S3_REGION": "EU West"}, "FALBACK_S3_REGION must be a region name"),
        ({"FALBACK_S3_PART_SIZE": "4MiB"}, "FALBACK_S3_PART_SIZE must be at least 5 MiB"),
        ({"FALBACK_S3_PART_SIZE": "2GiB"}, "FALBACK_S3_PART_SIZE must be at most 1 GiB"),
        ({"FALBACK_S3_PART_SIZE": "big"}, "FALBACK_S3_PART_SIZE must be a size in bytes"),
        ({"FALBACK_S3_PRESIGN_SECONDS": "604801"}, "at most 604800"),
        ({"FALBACK_S3_PRESIGN_SECONDS": "0"}, "FALBACK_S3_PRESIGN_SECONDS must be at least 1"),
        ({"FALBACK_S3_CHECKSUM": "sha1"}, "FALBACK_S3_CHECKSUM must be one of sha256, crc32, md5"),
        ({"FALBACK_S3_MAX_ATTEMPTS": "50"}, "FALBACK_S3_MAX_ATTEMPTS must be at most 10"),
        ({"FALBACK_S3_PREFIX": "../up"}, "FALBACK_S3_PREFIX must be a folder path"),
    ],
)
def test_bad_values_stop_start_up_with_a_clear_message(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.from_env(env(**extra))
    assert message in str(raised.value)
    assert SECRET not in str(raised.value) and KEY_ID not in str(raised.value)


def test_plain_http_on_loopback_or_when_allowed() -> None:
    assert settings(FALBACK_S3_ENDPOINT_URL="http://127.0.0.1:9000").endpoint_url == "http://127.0.0.1:9000"
    allowed = settings(FALBACK_S3_ENDPOINT_URL="http://minio:9000", FALBACK_S3_ALLOW_HTTP="true")
    assert allowed.endpoint_url == "http://minio:9000" and allowed.path_style
    r2 = settings(
        FALBACK_S3_ENDPOINT_URL="https://acc.r2.cloudflarestorage.com",
        FALBACK_S3_REGION="auto",
        FALBACK_S3_PATH_STYLE="false",
    )
    assert (r2.region, r2.path_style) == ("auto", False)

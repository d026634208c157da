"""boto3's S3 client as falback uses it, and S3's answers in the job's terms.

The client retries throttling, 5xx and dropped connections itself (botocore's "standard"
mode, `FALBACK_S3_MAX_ATTEMPTS` tries in all) before the job's own backoff takes over.
It computes no checksums of its own: each body carries the one `FALBACK_S3_CHECKSUM`
names, as a plain header, set by s3_upload.py (botocore's default, CRC32 in an aws-chunked
trailer, is refused by Backblaze B2 and older Supabase Storage).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from core.s3_settings import S3Settings
from jobs.errors import CopyError, PermanentError, TransientError

# Worth another attempt later, whatever the status code says.
_TRANSIENT = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "PriorRequestNotComplete",
    "IncompleteBody",
    # The body did not match its checksum: it was damaged on the way, and S3 refused it.
    "BadDigest",
    "XAmzContentSHA256Mismatch",
    "InvalidDigest",
    # Gone under us (by hand, a lifecycle rule, a second worker): the next attempt starts
    # from what S3 holds then.
    "NoSuchKey",
    "NoSuchUpload",
}
_KEYS_PAGE = "Supabase: Project Settings > Storage > S3 access keys; R2: API tokens; see docs/s3.md"


def client(settings: S3Settings) -> Any:
    """A client for these settings, made once per process (a forked work horse makes its
    own: a client's connection pool must not be shared across a fork)."""
    return _client(settings, os.getpid())


@functools.lru_cache(maxsize=4)
def _client(settings: S3Settings, pid: int) -> Any:
    config = BotoConfig(
        region_name=settings.region,
        signature_version="s3v4",
        s3={"addressing_style": "path" if settings.path_style else "virtual"},
        retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
        connect_timeout=min(settings.timeout, 30.0),
        read_timeout=settings.timeout,
        tcp_keepalive=True,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_appid="falback",
    )
    # A session of its own: no AWS_PROFILE or ~/.aws file decides where backups go.
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code") or "")


def status_of(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


@contextmanager
def classified(settings: S3Settings, doing: str) -> Iterator[None]:
    """Turn what boto3 raises while `doing` into the job's error classes."""
    try:
        yield
    except CopyError:
        raise
    except ClientError as e:
        raise copy_error(e, settings, doing) from e
    except SSLError as e:
        raise PermanentError(
            f"S3 {doing}: the TLS connection to {_where(settings)} failed"
            f" ({_safe(str(e), settings)[:160]}); check FALBACK_S3_ENDPOINT_URL"
        ) from e
    except (BotoConnectionError, HTTPClientError, IncompleteReadError) as e:
        raise TransientError(
            f"S3 {doing}: no answer from {_where(settings)} ({type(e).__name__}); will try again"
        ) from e
    except NoCredentialsError as e:
        raise PermanentError(
            "S3 has no credentials: set FALBACK_S3_ACCESS_KEY_ID and FALBACK_S3_SECRET_ACCESS_KEY"
        ) from e
    except BotoCoreError as e:
        if type(e).__name__ == "ParamValidationError":
            raise  # a bug here, not a state of the world: keep the traceback
        raise TransientError(f"S3 {doing}: {type(e).__name__}: {_safe(str(e), settings)[:200]}") from e


def copy_error(error: ClientError, settings: S3Settings, doing: str) -> CopyError:
    code, status = error_code(error), status_of(error)
    message = _safe(str(error.response.get("Error", {}).get("Message") or ""), settings)[:200]
    said = f"S3 answered {status} {code} to {doing}" + (f" ({message})" if message else "")
    if code in _TRANSIENT or status >= 500 or status in (408, 429):
        return TransientError(f"{said}; will try again", retry_after=_retry_after(error))
    advice = _advice(code, message, settings)
    return PermanentError(f"{said}: {advice}" if advice else said)


def _advice(code: str, message: str, settings: S3Settings) -> str:
    """A plain-language fix for what a person has to change."""
    bucket, where = settings.bucket, _where(settings)
    if code == "InvalidAccessKeyId":
        return f"{where} does not know FALBACK_S3_ACCESS_KEY_ID; copy the access key id again ({_KEYS_PAGE})"
    if code == "SignatureDoesNotMatch":
        return (
            "FALBACK_S3_SECRET_ACCESS_KEY does not match FALBACK_S3_ACCESS_KEY_ID (or"
            " FALBACK_S3_REGION is not the endpoint's region); copy the secret again"
            f" ({_KEYS_PAGE})"
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403"):
        return (
            f"the access key may not do this in bucket {bucket}: give it read, write, list"
            " and delete on the bucket (AWS: s3:GetObject, s3:PutObject, s3:DeleteObject,"
            " s3:ListBucket, s3:AbortMultipartUpload; see docs/s3.md)"
        )
    if code in ("NoSuchBucket", "InvalidBucketName"):
        return f"there is no bucket {bucket} at {where}: create it, or fix FALBACK_S3_BUCKET"
    if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "301"):
        return (
            f"set FALBACK_S3_REGION to the bucket's region (now {settings.region}) and check"
            " FALBACK_S3_ENDPOINT_URL"
        )
    if code == "EntityTooLarge":
        return (
            "the file is larger than the bucket accepts: raise the bucket's file size limit"
            " (Supabase: Storage > bucket > Edit bucket, and the project's upload limit)"
        )
    if code == "RequestTimeTooSkewed":
        return "this machine's clock is more than 15 minutes off: synchronise it (NTP)"
    if "checksum" in message.lower() or code in ("NotImplemented", "InvalidArgument"):
        return (
            f"{where} does not accept what falback sent ({settings.checksum} checksums); for"
            " Backblaze B2 set FALBACK_S3_CHECKSUM=md5, and see docs/s3.md for this provider"
        )
    return ""


def _where(settings: S3Settings) -> str:
    return settings.endpoint_url or f"AWS S3 ({settings.region})"


def _safe(text: str, settings: S3Settings) -> str:
    """Never repeat a credential, even one an odd server echoes back."""
    for secret in (settings.secret_access_key, settings.access_key_id):
        text = text.replace(secret, "***")
    return text


def _retry_after(error: ClientError) -> float | None:
    headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    value = str(headers.get("retry-after", "")).strip()
    return float(value) if value.isdigit() else None

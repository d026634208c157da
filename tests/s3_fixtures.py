"""Fixtures for the S3 tests: moto's S3 server over HTTP for the session, a fresh bucket
and a counting proxy (tests/s3_server.py) per test, and a Config whose FALBACK_S3_*
variables point at the proxy.

Test modules load them with `pytest_plugins = ["tests.s3_fixtures"]` and import helpers
from tests.s3_helpers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

from core.config import Config
from tests.s3_helpers import Bucket, moto_admin, moto_post, s3_env
from tests.s3_server import S3Proxy


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_server: str) -> Iterator[Bucket]:
    moto_post(moto_server, "/moto-api/reset")
    admin = moto_admin(moto_server)
    admin.create_bucket(Bucket="fal-backups")
    proxy = S3Proxy(moto_server)
    yield Bucket("fal-backups", moto_server, proxy, admin)
    proxy.close()
    moto_post(moto_server, "/moto-api/reset-auth", b"inf")


@pytest.fixture
def s3_config(config: Config, s3: Bucket) -> Config:
    return config.replace(s3_env=s3_env(s3))

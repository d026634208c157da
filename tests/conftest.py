"""Fixtures: real embedded Postgres and Redis for the session, a fresh database per test
(cloned from a migrated template), a stand-in for fal's CDN, the Flask app, and the Drive
emulator with a service-account key. Helpers are in tests/support/."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from moto.server import ThreadedMotoServer
from redis import Redis

from core.config import Config
from db.connection import Connection, connect
from db.migrate import apply_sample_schema
from devkit.drive_users import UserAccounts
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from tests.fakes.cdn import FakeCdn
from tests.fakes.drive_emulator import DriveEmulator
from tests.fakes.s3_server import S3Proxy
from tests.support.drive import ALICE, SA_EMAIL, Drive, Key, drive_env, make_key
from tests.support.drive_oauth import CLIENT_ID, CLIENT_SECRET, Personal
from tests.support.s3 import Bucket, moto_admin, moto_post, s3_env
from tests.support.servers import Servers
from tests.support.web import ADMIN_TOKEN, create_app_for

_TEMPLATE = "falback_template"
_counter = itertools.count()


def _fast_tmp() -> str | None:
    """A memory-backed folder for the servers' data when the machine has one: every test
    clones a database, and on a disk the kernel's write-back throttling makes each clone
    take half a second instead of a twentieth."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    # Not under pytest's tmp_path: pytest prunes old base folders, and a concurrent run
    # would delete the data folder of a live server.
    root = Path(tempfile.mkdtemp(prefix="falback-test-", dir=_fast_tmp()))
    root.chmod(0o755)  # pgserver runs postgres as its own system user when we are root
    postgres = EmbeddedPostgres(root / "postgres", durable=False)
    url = postgres.start()
    redis = EmbeddedRedis(root / "redis", persistent=False)
    redis.start()
    admin = psycopg2.connect(url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        cur.execute(f"CREATE DATABASE {_TEMPLATE}")
    admin.close()
    servers = Servers(postgres, url, redis)
    apply_sample_schema(servers.database_url(_TEMPLATE))
    yield servers
    redis.stop()
    postgres.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(servers: Servers) -> Iterator[str]:
    """A new database with migrations and the sample app tables, dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = psycopg2.connect(servers.postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    yield servers.database_url(name)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def own_database(servers: Servers) -> Iterator[str]:
    """A database that survives a Postgres restart: unlike `database_url`, no connection
    is held open across the test."""
    name = f"restart_{os.getpid()}_{next(_counter)}"

    def admin(statement: str) -> None:
        conn = psycopg2.connect(servers.postgres_url)
        conn.autocommit = True
        conn.cursor().execute(statement)
        conn.close()

    admin(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    yield servers.database_url(name)
    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def redis_url(servers: Servers) -> str:
    Redis.from_url(servers.redis.url).flushall()
    return servers.redis.url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    connection = connect(database_url)
    yield connection
    connection.close()


@pytest.fixture
def cdn() -> Iterator[FakeCdn]:
    with FakeCdn() as server:
        yield server


@pytest.fixture
def config(database_url: str, redis_url: str, tmp_path: Path) -> Config:
    return Config(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        source_hosts=("127.0.0.1",),
        allow_loopback_sources=True,
        backup_dir=tmp_path / "backups",
        max_attempts=3,
        retry_base_seconds=1,
        read_timeout=5.0,
        connect_timeout=2.0,
    )


@pytest.fixture
def app(config: Config) -> Flask:
    return create_app_for(config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def sa_key() -> Key:
    """A service-account key, made once (RSA key generation is slow)."""
    return make_key()


@pytest.fixture
def drive(tmp_path: Path, sa_key: Key) -> Iterator[Drive]:
    """The Drive emulator with a shared drive (the service account and Alice are members)
    and a folder in it for the backups."""
    with DriveEmulator(
        tmp_path / "drive", sa_key.public_pem, service_account_email=SA_EMAIL, allowed_subjects={ALICE}
    ) as emulator:
        # The service account is a Content manager, as docs/google-drive.md asks: it may add
        # and trash files, not delete them.
        drive_id = emulator.create_shared_drive(
            "Backups", members={SA_EMAIL: "fileOrganizer", ALICE: "organizer"}
        )
        yield Drive(emulator, drive_id, emulator.create_folder("fal", drive_id))


@pytest.fixture
def personal(tmp_path: Path, sa_key: Key) -> Iterator[Personal]:
    """The Drive emulator with personal Google accounts and falback's OAuth client."""
    with DriveEmulator(
        tmp_path / "drive", sa_key.public_pem, users=UserAccounts(CLIENT_ID, CLIENT_SECRET)
    ) as emulator:
        yield Personal(emulator)


@pytest.fixture
def drive_config(config: Config, drive: Drive, sa_key: Key) -> Config:
    """`config` with GOOGLE_DRIVE_* variables that point at the emulator."""
    return config.replace(google=drive_env(drive, sa_key))


# --- S3: moto's S3 server over HTTP for the session, a fresh bucket and a counting proxy
# (tests/fakes/s3_server.py) per test, and a Config whose FALBACK_S3_* point at the proxy.


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


@pytest.fixture
def drive_s3_config(drive_config: Config, s3: Bucket) -> Config:
    """Both destinations at once: FALBACK_DESTINATIONS=drive,s3."""
    return drive_config.replace(s3_env=s3_env(s3), destinations=("drive", "s3"))

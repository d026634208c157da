"""Run the web process as the Procfile does (gunicorn + gunicorn.conf.py) on a free
loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from core.config import Config
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def gunicorn(
    config: Config,
    log_path: Path,
    *,
    workers: int = 2,
    threads: int = 4,
    timeout: float = 20,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Yield the base URL of a running gunicorn; stop it (SIGTERM) afterwards. `extra_env`
    adds to the environment gunicorn.conf.py reads (WEB_BODY_TIMEOUT, say)."""
    port = free_port()
    env = {
        **os.environ,
        **config.as_env(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "WEB_THREADS": str(threads),
        **(extra_env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "listener:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited:\n{log_path.read_text()[-3000:]}")
                try:
                    if requests.get(f"{base_url}/ping", timeout=1).status_code == 200:
                        break
                except requests.RequestException:  # not listening yet, or still loading
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not answer:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.1)
            yield base_url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

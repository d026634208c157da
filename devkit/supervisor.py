"""`falback up`: run every Procfile process in the foreground, like `honcho start`.

Starts embedded servers when DATABASE_URL / REDIS_URL are unset, applies migrations,
then runs each Procfile line with those URLs in its environment, prefixing its output
with the process name. Ctrl-C (or SIGTERM) stops them all; the servers, in sessions of
their own so that the terminal's Ctrl-C does not reach them, stop after the processes
using them have exited.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import TextIO

from core.config import Config

PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"


def read_procfile(path: Path = PROCFILE) -> dict[str, str]:
    processes = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.strip()
    return processes


def admin_token(config: Config) -> tuple[str, bool]:
    """The admin token, and whether falback made it up: FALBACK_ADMIN_TOKEN when set,
    else one made up once and kept in the data folder. Only a made-up one is printed;
    the operator already knows the one they configured."""
    if config.admin_token:
        return config.admin_token, False
    path = admin_token_path(config)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip(), True


def admin_token_path(config: Config) -> Path:
    return config.data_dir / "admin-token"


def run(
    config: Config,
    extra_env: dict[str, str],
    port: int,
    *,
    stop: threading.Event | None = None,
    output: TextIO | None = None,
    drop_env: Iterable[str] = (),
    scale: Mapping[str, int] | None = None,
) -> int:
    """Run the Procfile until Ctrl-C, SIGTERM, a process exiting, or `stop` being set (by
    another thread). Output goes to `output` (default stdout); variables whose names
    start with a `drop_env` prefix are left out of the inherited environment; `scale`
    runs that many copies of a line (worker.1, worker.2, ...), as `honcho start -c` does."""
    assert config.database_url and config.redis_url
    prefixes = tuple(drop_env)
    env = {k: v for k, v in os.environ.items() if not (prefixes and k.startswith(prefixes))}
    env.update(extra_env)
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        PORT=str(port),
        FALBACK_ADMIN_TOKEN=admin_token(config)[0],
        PYTHONUNBUFFERED="1",
    )
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    children: dict[str, subprocess.Popen[bytes]] = {}
    for line_name, command in read_procfile().items():
        if line_name == "release":
            continue  # `up` has migrated already
        copies = (scale or {}).get(line_name, 1)
        for n in range(1, copies + 1):
            name = line_name if copies == 1 else f"{line_name}.{n}"
            children[name] = subprocess.Popen(
                command,
                shell=True,
                env=env,
                cwd=PROCFILE.parent,
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            threading.Thread(target=_relay_output, args=(name, children[name], output), daemon=True).start()

    stopping = stop or threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    exit_code = 0
    while not stopping.is_set():
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with code {child.returncode}; stopping the rest", flush=True)
                exit_code = child.returncode or 1
                stopping.set()
        stopping.wait(0.5)
    for child in children.values():
        _signal_group(child, signal.SIGTERM)
    # A Procfile line runs under a shell, which may exit before the program it started:
    # wait until each process group is empty, so that the servers outlive every process
    # that uses them.
    deadline = time.monotonic() + 20
    for child in children.values():
        if not _wait_for_group(child, deadline):
            _signal_group(child, signal.SIGKILL)
            _wait_for_group(child, time.monotonic() + 5)
    return exit_code


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)  # each child leads a session (and group) of its own
    except ProcessLookupError:
        pass


def _wait_for_group(child: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until no process of the child's group is left; False if the deadline passed."""
    while True:
        child.poll()  # reap the leader, or the group never empties
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _relay_output(name: str, child: subprocess.Popen[bytes], output: TextIO | None) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        out = output or sys.stdout
        out.write(f"{name:>7} | {line.decode(errors='replace')}")
        out.flush()

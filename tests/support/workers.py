"""Running the queued RQ jobs in real `falback worker` processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core.config import Config
from tests.support.processes import command_env, falback


def run_worker(config: Config, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a real `falback worker --burst` process until the queues are empty."""
    return run_worker_process(config, timeout)


def run_worker_process(config: Config, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A real `falback worker --burst` process, run until the queues are empty."""
    result = falback(config, "worker", "--burst", timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def worker_process(config: Config) -> subprocess.Popen[str]:
    """A real `falback worker --burst` in its own process group (so it can be killed whole)."""
    return subprocess.Popen(
        [sys.executable, "-m", "falback", "worker", "--burst"],
        env=command_env(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )


def children(pid: int) -> list[int]:
    """A live process's children (a forking worker's work horse)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def peak_rss(pid: int) -> int | None:
    """VmHWM (peak resident set) of a live process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None

#!/usr/bin/env python3
"""Set up and run falback from a fresh clone; needs only Python 3.11+ (no root).

    python3 dev.py run [--demo] [--port N]   run every process (embedded servers if unset)
    python3 dev.py test [pytest args]        run the test suite (a process per core; -n 0: one)
    python3 dev.py demo [--full-size]        offline demo: 507 files to a Drive emulator
    python3 dev.py lint                      ruff, mypy (product, tests, bench), import contracts

The first call creates `.venv/` and installs requirements-dev.txt; later calls reinstall
only when a requirements file changed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".requirements-hash"
PACKAGES = ("core", "db", "jobs", "listener", "falback", "devkit")


def requirements_hash() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py itself may run on an older Python
        sys.exit(f"falback needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = requirements_hash()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.create(VENV, with_pip=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    print("installing requirements-dev.txt ...", flush=True)
    subprocess.run([*pip, "-r", str(ROOT / "requirements-dev.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(wanted)


def foreground(command: list[str]) -> int:
    """Run `command` until it exits. Ctrl-C reaches it as well (same process group) and it
    shuts down in order, processes before the embedded servers: wait for that rather than
    kill it (subprocess.call would), and pass a SIGTERM on."""
    child = subprocess.Popen(command, cwd=ROOT)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: child.terminate())
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("run", "test", "lint", "demo"):
        print(__doc__)
        return 2
    ensure_venv()
    python = str(BIN / "python")
    command, rest = argv[0], argv[1:]
    if command == "run":
        return foreground([python, "-m", "falback", "up", *rest])
    if command == "demo":
        return foreground([python, "-m", "falback", "demo", *rest])
    if command == "test":
        # One pytest process per core (pytest-xdist), each with its own embedded servers:
        # most tests wait on servers and subprocesses, so two run in about the time of one.
        chosen = any(a.startswith(("-n", "--numprocesses")) for a in rest)
        spread = [] if chosen else ["-n", "auto"]
        code = foreground([python, "-m", "pytest", *spread, *rest])
        # pytest's 5 means "no tests collected": a broken suite, not a pass.
        return 1 if code == 5 else code
    lint = subprocess.call([python, "-m", "ruff", "check", "."], cwd=ROOT)
    lint = subprocess.call([python, "-m", "ruff", "format", "--check", "."], cwd=ROOT) or lint
    types = subprocess.call([python, "-m", "mypy", *PACKAGES, "tests", "bench"], cwd=ROOT)
    # The import directions in pyproject.toml's [tool.importlinter] contracts.
    layers = subprocess.call([str(BIN / "lint-imports")], cwd=ROOT)
    return lint or types or layers


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)

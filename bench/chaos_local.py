"""The chaos run's last phase: the local-folder destination on a disk that fills up.

The workers restart with the local folder as their destination, on a 2 MiB tmpfs, and
new app rows (several MiB in all) arrive through the relay. The disk fills, uploads must
pause (no file failed, no partial file left); then the disk grows (a remount, as an
operator would make room) and every file must end in the folder once, with its MD5.
A tmpfs needs mount(8) rights (root); elsewhere the phase is reported as not run.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
from chaos_load import KB, Load, SourceFile, _insert
from chaos_stack import Stack

WORKERS = ("worker.1", "worker.2")


@dataclass
class LocalResult:
    ran: bool = False
    note: str = ""
    files: list[SourceFile] = field(default_factory=list)
    paused: bool = False  # the folder was paused for a full disk
    failed_while_full: int = 0
    verified: int = 0
    duplicates: int = 0
    partial: int = 0
    lost: list[str] = field(default_factory=list)


def run_local_phase(stack: Stack, load: Load, rng: random.Random, count: int, timeout: float) -> LocalResult:
    result = LocalResult()
    disk = stack.data_dir / "local-disk"
    disk.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        result.note = f"not run: cannot mount a tmpfs ({mounted.stderr.decode().strip()})"
        return result
    try:
        _phase(stack, load, rng, count, timeout, disk, result)
    finally:
        for name in WORKERS:
            if stack.processes[name].poll() is None:
                stack.stop(name)
        subprocess.run(["umount", "-l", str(disk)], check=False)
    return result


def _phase(
    stack: Stack, load: Load, rng: random.Random, count: int, timeout: float, disk: Path, result: LocalResult
) -> None:
    result.ran = True
    local_env: dict[str, str | None] = {k: None for k in stack.env if k.startswith("GOOGLE_DRIVE_")}
    local_env.update(FALBACK_BACKUP_DIR=str(disk), FALBACK_DISK_FULL_PAUSE="3")
    for name in WORKERS:
        stack.stop(name)
        stack.start(name, env=local_env)
    created = datetime.now().astimezone() - timedelta(days=1)
    for n in range(count):
        size = rng.randint(300 * KB, 900 * KB)
        path = f"/files/b/chaos/local-{n:03d}.png"
        f = SourceFile(
            stack.cdn.add(path, size, seed=900_000 + n, content_type="image/png"), "image", size, "insert"
        )
        _insert(stack.database_url, ("gen_images", f, None, created))
        f.accepted = True
        result.files.append(f)
    urls = [f.url for f in result.files]
    deadline = time.monotonic() + timeout
    grown = False
    while time.monotonic() < deadline:
        statuses = _statuses(stack.database_url, urls)
        result.paused = result.paused or _paused(stack.database_url)
        result.failed_while_full = max(
            result.failed_while_full, sum(s == "failed" for s in statuses.values())
        )
        if not grown and (result.paused or time.monotonic() > deadline - timeout / 2):
            time.sleep(2.0)  # a while full, then the operator makes room
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            grown = True
        if (
            grown
            and len(statuses) == len(urls)
            and all(s in ("done", "failed", "gone") for s in statuses.values())
        ):
            break
        time.sleep(0.5)
    _verify(stack, disk, result)
    result.note = (
        f"{count} files onto a 2 MiB disk: paused for a full disk: {'yes' if result.paused else 'NO'},"
        f" files failed while full: {result.failed_while_full}, partial files left: {result.partial};"
        " then the disk grew to 64 MiB"
    )


def _statuses(database_url: str, urls: list[str]) -> dict[str, str]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT source_url, status FROM ledger WHERE source_url = ANY(%s)", (urls,))
        rows = {str(u): str(s) for u, s in cur.fetchall()}
    conn.close()
    return rows


def _paused(database_url: str) -> bool:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM destination_pauses WHERE destination = 'local'")
        row = cur.fetchone()
    conn.close()
    return bool(row and row[0])


def _verify(stack: Stack, disk: Path, result: LocalResult) -> None:
    with psycopg2.connect(stack.database_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT source_url, id, status FROM ledger WHERE source_url = ANY(%s)",
            ([f.url for f in result.files],),
        )
        rows = {str(u): (int(i), str(s)) for u, i, s in cur.fetchall()}
    conn.close()
    copies: dict[str, list[Path]] = {}
    for path in disk.rglob("*"):
        if path.is_file() and path.name.startswith("."):
            result.partial += 1  # a temporary file an attempt left behind
        elif path.is_file():
            copies.setdefault(path.name.split("-", 1)[0], []).append(path)
    result.duplicates = sum(len(p) - 1 for p in copies.values())
    for f in result.files:
        ledger_id, status = rows.get(f.url, (0, "no ledger row"))
        paths = copies.get(str(ledger_id), [])
        expected = stack.cdn.file(f.url).md5()
        if status == "done" and paths and all(_md5(p) == expected for p in paths):
            result.verified += 1
        else:
            result.lost.append(f"{f.url}: {status}, {len(paths)} local copies")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()

"""Benchmark: one file from the stand-in CDN to the Drive emulator, through the worker's code.

Starts embedded Postgres and Redis, the fake CDN (in this process) and the Drive emulator
(a process of its own, so the two servers do not share a GIL). Then, over those same two
servers:

- baseline: `curl` downloading from the CDN piped into `curl` uploading to a resumable
  session in one PUT (no hashing, no chunking: the ceiling for this machine and servers);
- falback: `jobs.backup.backup_file` (the worker's job: claim, stream, hash, chunked
  resumable upload, verify, record) in a fresh child process, for the MB/s and the peak
  RSS (ru_maxrss) of that process.

    .venv/bin/python bench/copy_drive.py [--size-mib 1024] [--repeat 3] [--chunk-size 16MiB]

(Not bench/copy.py: a script directory is first on sys.path, so that name would shadow
the standard library's `copy` module for every script in bench/.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2

# This tree's code, not whichever one an editable install of the venv points at (the job's
# child process runs this script too, so it does the same).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024, help="the throughput file")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--chunk-size", default="16MiB")
    parser.add_argument("--run-job", type=int, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.run_job is not None:
        run_job(args.run_job)
        return
    with Bench(args.chunk_size) as bench:
        print(machine(), flush=True)
        print(f"chunk size {args.chunk_size}; CDN in this process, Drive emulator in its own", flush=True)
        size = args.size_mib * MiB
        base: list[float] = []
        ours: list[dict[str, Any]] = []
        for _ in range(args.repeat):  # interleaved, so drift (page cache, other load) hits both
            base.append(bench.baseline(size))
            ours.append(bench.falback(size))
        base_rate = statistics.median(size / MiB / s for s in base)
        our_rate = statistics.median(size / MiB / r["seconds"] for r in ours)
        print(f"{args.size_mib} MiB, median of {args.repeat}:")
        base_times = ", ".join(f"{s:.2f}s" for s in base)
        our_times = ", ".join(f"{r['seconds']:.2f}s" for r in ours)
        print(f"  baseline curl | curl : {base_rate:7.1f} MiB/s  ({base_times})")
        print(f"  falback worker path  : {our_rate:7.1f} MiB/s  ({our_times})")
        print(f"  ratio                : {our_rate / base_rate:.2f}")
        print("peak RSS of the job's process (ru_maxrss):")
        for mib in (1, 100, 1024):
            result = ours[0] if mib == args.size_mib else bench.falback(mib * MiB)
            print(
                f"  {mib:>5} MiB file: {result['max_rss'] / MiB:6.1f} MiB"
                f"  ({mib / result['seconds']:.0f} MiB/s)",
                flush=True,
            )


class Bench:
    def __init__(self, chunk_size: str) -> None:
        self.chunk_size = chunk_size
        self.root = Path(tempfile.mkdtemp(prefix="falback-bench-copy-"))
        self.root.chmod(0o755)
        self.files = 0

    def __enter__(self) -> Bench:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from db.migrate import migrate
        from devkit.embedded import EmbeddedPostgres, EmbeddedRedis
        from devkit.fakecdn import FakeCdn

        self.postgres = EmbeddedPostgres(self.root / "pg")
        self.redis = EmbeddedRedis(self.root / "redis", persistent=False)
        admin_url = self.postgres.start()
        self.redis_url = self.redis.start()
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bench")
        admin.close()
        self.database_url = admin_url.replace("@/postgres?", "@/bench?")
        migrate(self.database_url)
        self.cdn = FakeCdn().start()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = self.root / "sa.pub"
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        port = free_port()
        self.emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devkit.drive_emulator",
                "--port",
                str(port),
                "--dir",
                str(self.root / "drive"),
                "--public-key",
                str(public),
                "--shared-drive",
                "Backups",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.emulator.stdout is not None
        self.emulator.stdout.readline()  # "Drive emulator at ..."
        self.drive_id = self.emulator.stdout.readline().rsplit(":", 1)[1].strip()
        self.drive_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.terminate()
        self.emulator.wait()
        self.cdn.stop()
        self.redis.stop()
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict[str, str]:
        from core.config import Config

        google = {
            "GOOGLE_DRIVE_PRIVATE_KEY": self.private_pem.replace("\n", "\\n"),
            "GOOGLE_DRIVE_CLIENT_EMAIL": "bench@demo.iam.gserviceaccount.com",
            "GOOGLE_DRIVE_FOLDER_ID": self.drive_id,
            "GOOGLE_DRIVE_CHUNK_SIZE": self.chunk_size,
            "GOOGLE_DRIVE_API_BASE_URL": self.drive_url,
            "GOOGLE_DRIVE_TOKEN_URI": self.drive_url + "/token",
        }
        config = Config(
            database_url=self.database_url,
            redis_url=self.redis_url,
            source_hosts=("127.0.0.1",),
            allow_loopback_sources=True,
            google=google,
            job_timeout_seconds=3600,
        )
        return config.as_env()

    def source(self, size: int) -> str:
        self.files += 1
        return self.cdn.add(f"/bench/{self.files}.mp4", size, seed=self.files)

    def baseline(self, size: int) -> float:
        from core.config import Config
        from jobs.destinations.drive_api import DriveApi

        settings = Config.from_env(self.env()).drive
        assert settings is not None
        api = DriveApi(settings)
        uri = api.uploads.start_session(
            {"name": "baseline.mp4", "parents": [self.drive_id]}, size, "video/mp4"
        )
        api.close()
        url = self.source(size)
        started = time.perf_counter()
        download = subprocess.Popen(["curl", "-sS", "--fail", url], stdout=subprocess.PIPE)
        upload = subprocess.run(
            [
                "curl",
                "-sS",
                "--fail",
                "-X",
                "PUT",
                "-T",
                "-",
                "-H",
                "Expect:",
                "-H",
                "Transfer-Encoding:",
                "-H",
                f"Content-Length: {size}",
                uri,
            ],
            stdin=download.stdout,
            capture_output=True,
            text=True,
            check=True,
        )
        download.wait()
        elapsed = time.perf_counter() - started
        assert json.loads(upload.stdout)["id"], upload.stdout
        return elapsed

    def falback(self, size: int) -> dict[str, Any]:
        url = self.source(size)
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO ledger (source_url, kind) VALUES (%s, 'upscale') RETURNING id", (url,))
            row = cur.fetchone()
        assert row is not None
        child = subprocess.run(
            [sys.executable, __file__, "--run-job", str(row[0])],
            env=dict(os.environ, **self.env()),
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr[-3000:])
        result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
        assert result["status"] == "done", result
        return result


def run_job(ledger_id: int) -> None:
    """Child: the worker's job function, timed, and this process's peak RSS."""
    from redis import Redis

    from core.config import Config
    from jobs import backup
    from jobs.worker import WorkerContext

    config = Config.from_env()
    assert config.redis_url
    context = WorkerContext(config, Redis.from_url(config.redis_url))
    started = time.perf_counter()
    status = backup.backup_file(context, ledger_id)
    seconds = time.perf_counter() - started
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"status": status, "seconds": seconds, "max_rss": max_rss}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
    return (
        f"machine: {os.cpu_count()} vCPU {model}, {memory:.0f} GiB RAM, {platform.system()}"
        f" {platform.release()}, Python {platform.python_version()}, curl {curl}"
    )


if __name__ == "__main__":
    main()

"""Benchmark: the media proxy (GET /media/<id>, a local-folder copy, gunicorn as the
Procfile runs it) against reading the same file directly, in one run.

Starts embedded Postgres and Redis in a temporary folder, migrates, writes a file of
`--mib` MiB of random bytes under FALBACK_BACKUP_DIR with its ledger row, and serves the
folder with a plain static server (Python's http.server, threaded) beside gunicorn. curl
is the client for all three, so client cost is the same:

1. `file://` (no HTTP at all),
2. the static server (HTTP, no application),
3. the proxy (`/media/<id>`: a Postgres lookup, then the file streamed in 256 KiB chunks).

Prints the median throughput of `--runs` whole-file reads and the median time to first
byte of `--probes` one-byte Range requests (a <video> seek) for each, and the proxy's
ratios to the static server and to file://. (http.server ignores Range and curl sends no
headers to file://: their first byte is the file's first byte.)

    .venv/bin/python bench/media.py [--mib 512] [--runs 5] [--probes 50]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import Config  # noqa: E402
from db.migrate import migrate  # noqa: E402
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from tests.support.gunicorn import gunicorn  # noqa: E402

NAME = "upscale/2026-12/1-bench.mp4"


def curl(url: str, *headers: str) -> tuple[float, float]:
    """(seconds to the first byte, bytes per second) of one GET."""
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{time_starttransfer} %{speed_download}"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    first, speed = out.split()
    return float(first), float(speed)


def measure(label: str, url: str, runs: int, probes: int) -> tuple[float, float]:
    curl(url)  # warm: the page cache, the connection pools
    speed = statistics.median(curl(url)[1] for _ in range(runs))
    ttfb = statistics.median(curl(url, "Range: bytes=1000000-1000000")[0] for _ in range(probes))
    print(f"{label:<28} {speed / 2**20:9.0f} MiB/s   first byte {ttfb * 1000:7.2f} ms")
    return speed, ttfb


def write_file(path: Path, mib: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    md5 = hashlib.md5()
    block = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(block)
            md5.update(block)
    return md5.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()};"
        f" Python {platform.python_version()}; gunicorn.conf.py, 1 gevent worker;"
        f" a {args.mib} MiB file, curl on loopback"
    )
    root = Path(tempfile.mkdtemp(prefix="falback-bench-"))
    root.chmod(0o755)  # pgserver runs postgres as its own user when we are root
    postgres, redis_server = EmbeddedPostgres(root / "pg"), EmbeddedRedis(root / "redis", persistent=False)
    static = None
    try:
        admin_url = postgres.start()
        redis_url = redis_server.start()
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bench_media")
        admin.close()
        url = admin_url.replace("@/postgres?", "@/bench_media?")
        migrate(url)
        backups = root / "backups"
        path = backups / NAME
        md5 = write_file(path, args.mib)
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ledger (source_url, kind, status, destination, destination_id,"
                " size_bytes, md5, content_type, expires_at, done_at) VALUES"
                " ('https://v3.fal.media/files/bench.mp4', 'upscale', 'done', 'local', %s, %s, %s,"
                " 'video/mp4', now() - interval '1 hour', now()) RETURNING media_id",
                (NAME, path.stat().st_size, md5),
            )
            media_id = cur.fetchone()[0]  # type: ignore[index]
        conn.close()
        handler = functools.partial(_Quiet, directory=str(backups))
        static = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=static.serve_forever, daemon=True).start()
        config = Config(database_url=url, redis_url=redis_url, data_dir=root / "data", backup_dir=backups)
        with gunicorn(config, root / "gunicorn.log", workers=1) as base_url:
            file = measure("file:// (curl)", path.as_uri(), args.runs, args.probes)
            direct = measure(
                "static server (http.server)",
                f"http://127.0.0.1:{static.server_address[1]}/{NAME}",
                args.runs,
                args.probes,
            )
            proxied = measure("falback /media/<id>", f"{base_url}/media/{media_id}", args.runs, args.probes)
        print(
            f"proxy / static server: throughput {proxied[0] / direct[0]:.2f}x,"
            f" time to first byte {proxied[1] / direct[1]:.2f}x"
        )
        print(f"proxy / file://: throughput {proxied[0] / file[0]:.2f}x")
    finally:
        if static is not None:
            static.shutdown()
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass


if __name__ == "__main__":
    main()

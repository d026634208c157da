"""Benchmark: signed fal webhooks through the real web process.

Starts embedded Postgres and Redis in a temporary folder, migrates, serves a JWKS
stand-in, and runs gunicorn exactly as the Procfile does (gunicorn.conf.py: gevent,
WEB_CONCURRENCY workers, a pool of WEB_THREADS Postgres connections each) on a free
loopback port. Then a few client threads post pre-signed fal webhooks (distinct request
ids, one or two media URLs each: a video, and an upscaled video for every other request),
and the same number of requests goes to `GET /ping` (no I/O) on the same server, the two
alternating in `--rounds` rounds. Prints requests/s and p50/p99 latency for both, the
CPU the servers spent per request (gunicorn, Postgres, Redis: read from /proc for the
processes this run started, so other work on a shared machine is left out), and the
ratio: what verifying, recording and dispatching costs next to the bare HTTP + Flask path.

    .venv/bin/python bench/ingest.py [--requests 2000] [--clients 4] [--rounds 5] [--max-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import Config  # noqa: E402
from db.migrate import migrate  # noqa: E402
from devkit.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from tests.fakes.jwks_server import JwksServer, jwks, signed_headers  # noqa: E402
from tests.support.gunicorn import gunicorn  # noqa: E402

Request = tuple[bytes, dict[str, str]]


def webhooks(key: Ed25519PrivateKey, n: int, prefix: str = "bench") -> list[Request]:
    """Signed before the clock starts, so the clients measure the server, not ED25519."""
    now = int(time.time())
    out = []
    for i in range(n):
        request_id = f"{prefix}-{now}-{i}"
        payload: dict[str, object] = {
            "video": {
                "url": f"https://v3b.fal.media/files/b/bench/{request_id}.mp4",
                "content_type": "video/mp4",
                "file_name": "output.mp4",
                "file_size": 4_000_000,
            }
        }
        if i % 2:
            payload["upscaled_video"] = {
                "url": f"https://v3b.fal.media/files/b/bench/{request_id}_upscaled.mp4"
            }
        body = json.dumps(
            {"request_id": request_id, "gateway_request_id": request_id, "status": "OK", "payload": payload}
        ).encode()
        headers = signed_headers(key, body, timestamp=now, request_id=request_id, user_id="bench")
        out.append((body, {**headers, "Content-Type": "application/json"}))
    return out


def _processes() -> dict[int, tuple[int, float, str]]:
    """{pid: (parent pid, CPU seconds, command line)} of every process (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, command)
    return found


def server_seconds(root: Path) -> dict[str, float]:
    """CPU seconds used so far by the servers this run started: the processes below this
    one other than itself (gunicorn, Redis) and below the postmaster serving `root`.
    Other work on a shared machine is left out."""
    procs = _processes()
    tops = {os.getpid()} | {pid for pid, (_, _, command) in procs.items() if f"-D {root}" in command}
    changed = True
    tree = set(tops)
    while changed:  # every descendant of the tops
        grown = tree | {pid for pid, (parent, _, _) in procs.items() if parent in tree}
        changed, tree = grown != tree, grown
    split = {"postgres": 0.0, "redis": 0.0, "web": 0.0}
    for pid in tree - {os.getpid()}:
        command = procs[pid][2]
        name = "postgres" if "postgres" in command else "redis" if "redis" in command else "web"
        split[name] += procs[pid][1]
    return split


Run = tuple[float, list[float], int, dict[str, float]]


def fire(
    clients: int,
    items: list[Request],
    max_seconds: float,
    send: Callable[[requests.Session, Request], int],
    root: Path,
) -> Run:
    """Send `items` from `clients` threads; return (seconds, latencies, non-200 count, CPU
    seconds the servers spent meanwhile: gunicorn, Postgres, Redis)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    cursor = iter(items)
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        nonlocal errors
        session = requests.Session()
        mine: list[float] = []
        bad = 0
        while time.monotonic() < deadline:
            with lock:
                item = next(cursor, None)
            if item is None:
                break
            start = time.perf_counter()
            if send(session, item) != 200:
                bad += 1
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            errors += bad
        session.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start, cpu = time.perf_counter(), server_seconds(root)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    after = server_seconds(root)
    return took, latencies, errors, {name: after[name] - cpu[name] for name in after}


def combined(runs: list[Run]) -> Run:
    return (
        sum(run[0] for run in runs),
        [latency for run in runs for latency in run[1]],
        sum(run[2] for run in runs),
        {name: sum(run[3][name] for run in runs) for name in runs[0][3]},
    )


def report(
    name: str, seconds: float, latencies: list[float], errors: int, server_cpu: dict[str, float]
) -> float:
    rate = len(latencies) / seconds
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{name:<14} {len(latencies):>6} requests in {seconds:6.2f} s  {rate:8.1f}/s"
        f"  p50 {cuts[49] * 1000:6.2f} ms  p99 {cuts[98] * 1000:6.2f} ms  non-200: {errors}"
    )
    per = {part: cpu / len(latencies) * 1000 for part, cpu in server_cpu.items()}
    split = ", ".join(f"{part} {ms:.2f}" for part, ms in per.items())
    print(f"{'':<14} server CPU per request: {sum(per.values()):.2f} ms ({split})")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=5, help="alternate webhooks and pings this many times")
    args = parser.parse_args()
    workers, threads = os.environ.get("WEB_CONCURRENCY", "2"), os.environ.get("WEB_THREADS", "4")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()};"
        f" Python {platform.python_version()}; gunicorn gevent {workers} workers,"
        f" {threads} Postgres connections each;"
        f" {args.clients} client threads on the same machine"
    )
    root = Path(tempfile.mkdtemp(prefix="falback-bench-"))
    root.chmod(0o755)  # pgserver runs postgres as its own user when we are root
    postgres, redis_server = EmbeddedPostgres(root / "pg"), EmbeddedRedis(root / "redis", persistent=False)
    key = Ed25519PrivateKey.generate()
    try:
        admin_url = postgres.start()
        redis_url = redis_server.start()
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE bench_ingest")
        admin.close()
        url = admin_url.replace("@/postgres?", "@/bench_ingest?")
        migrate(url)
        items = webhooks(key, args.requests)
        with JwksServer(jwks(key)) as jwks_server:
            config = Config(
                database_url=url,
                redis_url=redis_url,
                data_dir=root / "data",
                fal_jwks_urls=(jwks_server.url,),
            )
            with gunicorn(
                config, root / "gunicorn.log", workers=int(workers), threads=int(threads)
            ) as base_url:
                hook_url, ping_url = f"{base_url}/webhooks/fal", f"{base_url}/ping"

                def post(session: requests.Session, item: Request) -> int:
                    return session.post(hook_url, data=item[0], headers=item[1], timeout=30).status_code

                def ping(session: requests.Session, _item: Request) -> int:
                    return session.get(ping_url, timeout=30).status_code

                # Warm up: every worker loads the JWKS and imports lazily-loaded modules.
                fire(args.clients, webhooks(key, 40, "warmup"), 10, post, root)
                fire(args.clients, [(b"", {})] * 40, 10, ping, root)
                # Alternated in rounds, so that the other load of a shared machine, which
                # comes and goes, falls on both routes alike.
                hook_runs: list[Run] = []
                ping_runs: list[Run] = []
                size = -(-len(items) // args.rounds)
                for start in range(0, len(items), size):
                    batch = items[start : start + size]
                    hook_runs.append(fire(args.clients, batch, args.max_seconds, post, root))
                    ping_runs.append(
                        fire(args.clients, [(b"", {})] * len(batch), args.max_seconds, ping, root)
                    )
                hooks = report("POST webhook", *combined(hook_runs))
                pings = report("GET /ping", *combined(ping_runs))
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM fal_deliveries), (SELECT count(*) FROM ledger)")
            deliveries, files = cur.fetchone() or (0, 0)
        conn.close()
        print(
            f"webhook / ping throughput: {hooks / pings:.2f}"
            f"  ({deliveries} deliveries, {files} ledger rows recorded)"
        )
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

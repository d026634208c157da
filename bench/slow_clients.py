"""Benchmark: webhooks and /ping while slow clients hold connections to the web process.

Starts embedded Postgres and Redis in a temporary folder, migrates, serves a JWKS stand-in
and runs gunicorn exactly as the Procfile does (gunicorn.conf.py, WEB_CONCURRENCY workers)
on a free loopback port. Then, twice in the same run:

1. baseline: a few client threads post pre-signed fal webhooks and send `GET /ping`, each
   on a new connection (as fal's first delivery arrives), with fal's 15 s as the timeout;
   half of it before the slow run, half after;
2. the same while `--slow` clients each send the headers of a webhook POST and then its
   body one byte a second (re-opening a connection whenever the server closes it), after
   they have run for `--settle` seconds.

Prints p50/p99 latency and how many requests got a 200 within 15 s, for both runs, and the
ratio of the second to the first.

    .venv/bin/python bench/slow_clients.py [--slow 300] [--requests 200] [--clients 4] \
        [--max-seconds 60] [--settle 12]
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
from tests.support.slow_clients import SlowClients  # noqa: E402

FAL_TIMEOUT = 15.0
Request = tuple[bytes, dict[str, str]]


def webhooks(key: Ed25519PrivateKey, n: int, prefix: str) -> list[Request]:
    """Signed before the clock starts, so the clients measure the server, not ED25519."""
    now = int(time.time())
    out = []
    for i in range(n):
        request_id = f"{prefix}-{now}-{i}"
        body = json.dumps(
            {
                "request_id": request_id,
                "status": "OK",
                "payload": {"video": {"url": f"https://v3b.fal.media/files/b/bench/{request_id}.mp4"}},
            }
        ).encode()
        headers = signed_headers(key, body, timestamp=now, request_id=request_id, user_id="bench")
        out.append((body, {**headers, "Content-Type": "application/json"}))
    return out


class Run:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ok = 0  # 200 within fal's 15 s

    def line(self, name: str) -> str:
        cuts = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [0.0] * 99
        return (
            f"{name:<32} p50 {cuts[49] * 1000:8.1f} ms  p99 {cuts[98] * 1000:8.1f} ms"
            f"  200 within 15 s: {self.ok}/{len(self.latencies)}"
        )

    def add(self, other: Run) -> None:
        self.latencies += other.latencies
        self.ok += other.ok

    def p(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100)[q - 1]


def fire(clients: int, items: list[Request], max_seconds: float, send: Callable[[Request], int]) -> Run:
    """Send `items` from `clients` threads, a new connection each; stop at `max_seconds`."""
    run = Run()
    lock = threading.Lock()
    cursor = iter(items)
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        while time.monotonic() < deadline:
            with lock:
                item = next(cursor, None)
            if item is None:
                return
            start = time.perf_counter()
            try:
                status = send(item)
            except requests.RequestException:
                status = 0
            elapsed = time.perf_counter() - start
            with lock:
                run.latencies.append(elapsed)
                run.ok += status == 200 and elapsed <= FAL_TIMEOUT

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=300, help="slow clients")
    parser.add_argument("--requests", type=int, default=200, help="webhooks (and pings) per run")
    parser.add_argument("--clients", type=int, default=4, help="client threads sending them")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="bound on each run")
    parser.add_argument(
        "--settle",
        type=float,
        default=12.0,
        help="seconds the slow clients run before the clock starts (past"
        " WEB_BODY_TIMEOUT, so they are being cut off and reconnecting)",
    )
    args = parser.parse_args()
    workers = os.environ.get("WEB_CONCURRENCY", "2")
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()};"
        f" Python {platform.python_version()}; gunicorn.conf.py with {workers} workers;"
        f" {args.slow} slow clients, {args.clients} client threads, all on loopback"
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
        admin.cursor().execute("CREATE DATABASE bench_slow")
        admin.close()
        url = admin_url.replace("@/postgres?", "@/bench_slow?")
        migrate(url)
        with JwksServer(jwks(key)) as jwks_server:
            config = Config(
                database_url=url,
                redis_url=redis_url,
                data_dir=root / "data",
                fal_jwks_urls=(jwks_server.url,),
            )
            with gunicorn(config, root / "gunicorn.log", workers=int(workers)) as base_url:
                hook_url, ping_url = f"{base_url}/webhooks/fal", f"{base_url}/ping"

                def post(item: Request) -> int:
                    return requests.post(
                        hook_url, data=item[0], headers=item[1], timeout=FAL_TIMEOUT
                    ).status_code

                def ping(_item: Request) -> int:
                    return requests.get(ping_url, timeout=FAL_TIMEOUT).status_code

                half = args.requests // 2
                pings: list[Request] = [(b"", {})] * args.requests
                fire(args.clients, webhooks(key, 40, "warmup"), 10, post)  # every worker loads the JWKS
                # The baseline is taken half before and half after the slow run, so that a
                # machine busy with other work biases neither side.
                base_hooks = fire(args.clients, webhooks(key, half, "base1"), args.max_seconds, post)
                base_pings = fire(args.clients, pings[:half], args.max_seconds, ping)
                with SlowClients(base_url, args.slow) as slow:
                    time.sleep(args.settle)
                    slow_hooks = fire(
                        args.clients, webhooks(key, args.requests, "slow"), args.max_seconds, post
                    )
                    slow_pings = fire(args.clients, pings, args.max_seconds, ping)
                    answers = dict(slow.answers)
                    opened = slow.opened
                base_hooks.add(fire(args.clients, webhooks(key, half, "base2"), args.max_seconds, post))
                base_pings.add(fire(args.clients, pings[:half], args.max_seconds, ping))
        print(base_hooks.line("POST /webhooks/fal"))
        print(base_pings.line("GET /ping"))
        print(slow_hooks.line(f"POST /webhooks/fal, {args.slow} slow"))
        print(slow_pings.line(f"GET /ping, {args.slow} slow"))
        for name, base, slow_run in (("webhook", base_hooks, slow_hooks), ("ping", base_pings, slow_pings)):
            print(
                f"{name} with / without slow clients: p50 {slow_run.p(50) / base.p(50):.2f}x,"
                f" p99 {slow_run.p(99) / base.p(99):.2f}x"
            )
        print(f"slow clients: {opened} connections opened; the server's answers to them: {answers}")
    finally:
        redis_server.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Chaos run: the whole stack through many failures at once, then a count of what survived.

Starts every Procfile process (gunicorn, two workers, relay, cron) on real embedded
Postgres and Redis, with the fal CDN stand-in as the source and the Drive emulator as the
destination (a service account in a shared drive, through the production Drive code).
While signed fal webhooks arrive (repeated, out of order, retried on 5xx as fal does),
app rows are inserted and a backfill runs, faults are injected on a schedule drawn from
the seed (see chaos_faults.KINDS; truncated and slow source bodies are in the data).
Then it waits, bounded, for every accepted file to reach a final state, checks each copy's
MD5 at the destination, prints the table and exits 1 if a file was lost or duplicated.

    .venv/bin/python bench/chaos.py [--quick] [--seed N] [--files N] [--keep DIR]

Loopback only; every run stops by itself (`--quick` in under 3 minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos_faults import FaultRunner, schedule  # noqa: E402
from chaos_load import Traffic, plan, seed_backlog  # noqa: E402
from chaos_local import run_local_phase  # noqa: E402
from chaos_stack import Stack  # noqa: E402
from chaos_verify import settled, verify  # noqa: E402

# Short timings, so that every recovery path (backoff, lease expiry, the sweep, the daily
# cap's pause) runs its course inside the run. A kill -9 leaves its row leased for
# FALBACK_JOB_TIMEOUT + 60 s: the run must outlast that.
SETTINGS = {
    "WEB_CONCURRENCY": "1",
    "FALBACK_SWEEP_INTERVAL": "3",
    "FALBACK_RETRY_BASE_SECONDS": "1",
    "FALBACK_MAX_ATTEMPTS": "6",
    "FALBACK_JOB_TIMEOUT": "10",
    "FALBACK_READ_TIMEOUT": "10",
    "FALBACK_DAILY_BACKFILL": "off",
    "GOOGLE_DRIVE_CHUNK_SIZE": "256KiB",
    "GOOGLE_DRIVE_RETRY_BASE_SECONDS": "0.2",
    "GOOGLE_DRIVE_TIMEOUT": "10",
    "GOOGLE_DRIVE_UPLOAD_CAP_PAUSE": "5",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer files, each fault once (CI)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random)")
    parser.add_argument("--files", type=int, default=None, help="files to back up (default 320, quick 60)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run's data (logs) in DIR")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    count = args.files or (60 if args.quick else 320)
    window = 45.0 if args.quick else 150.0  # traffic and faults happen in this span
    settle = 110.0 if args.quick else 360.0  # then at most this long for the rest
    rng = random.Random(seed)
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="falback-chaos-"))
    print(f"chaos: seed {seed}, {count} files, faults over {window:.0f}s; data in {data_dir}", flush=True)
    started_at = datetime.now(UTC)
    stack = Stack(data_dir, SETTINGS)
    try:
        return _run(stack, rng, seed, count, window, settle, started_at)
    finally:
        stack.close()
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)


def _run(
    stack: Stack,
    rng: random.Random,
    seed: int,
    count: int,
    window: float,
    settle: float,
    started_at: datetime,
) -> int:
    load = plan(stack.cdn, rng, count, expire_at=window * 0.4, started=started_at)
    seed_backlog(stack.database_url, load)
    stack.start_all()
    deadline = time.monotonic() + 60
    while not stack.healthy():
        if time.monotonic() > deadline or stack.exited():
            print(f"chaos: the stack did not come up ({stack.exited()})", flush=True)
            return 2
        time.sleep(0.2)
    t0 = time.monotonic()

    def clock() -> float:
        return time.monotonic() - t0

    traffic = Traffic(stack, load, window * 0.8, rng)
    faults = FaultRunner(stack, load, schedule(rng, window, repeats=1 if count <= 100 else 2), clock)
    fault_thread = threading.Thread(target=faults.run, daemon=True)
    traffic.start()
    fault_thread.start()
    last = -10.0
    while clock() < window + settle:
        try:
            finished, accepted = settled(stack, load)
        except psycopg2.Error:  # Postgres restarting (a fault): ask again
            time.sleep(1.0)
            continue
        if clock() - last >= 10:
            print(f"[{clock():5.0f}s] {finished}/{accepted} accepted files in a final state", flush=True)
            last = clock()
        if traffic.done and not fault_thread.is_alive() and finished == accepted:
            break
        time.sleep(1.0)
    traffic.stop.set()
    faults.stop.set()
    fault_thread.join(30)
    traffic.join(30)
    verdict = verify(stack, load)
    local = run_local_phase(stack, load, rng, count=8, timeout=60.0)
    verdict.merge_local(local)
    elapsed = clock()
    answers = [a for d in load.deliveries for a in d.answers]
    print(f"\nfaults (seed {seed}):")
    for fault in sorted(faults.faults, key=lambda f: f.started):
        print(f"  {fault.started:6.1f}s  {fault.kind}: {fault.result}")
    print(
        f"  in the data: {sum(1 for f in load.files if stack.cdn.file(f.url).truncate_at is not None)}"
        f" sources cut off mid-body once, {sum(1 for f in load.files if stack.cdn.file(f.url).slow_delay)}"
        f" slow, {sum(1 for f in load.files if f.expires == 'expired')} expired before the run"
    )
    print(f"  Drive faults fired: {len(stack.drive.faults.fired)}")
    print(f"  local folder, disk full: {local.note}")
    if "wipe Redis" in faults.recovery:
        print(
            "  after the Redis wipe, every unfinished row had a job again in"
            f" {faults.recovery['wipe Redis']:.1f}s"
        )
    print(
        f"  webhook answers: {len(answers)} tries for {len(load.deliveries)} deliveries;"
        f" 2xx {sum(200 <= a < 300 for a in answers)}, 503 {answers.count(503)},"
        f" other 5xx {sum(500 <= a < 600 and a != 503 for a in answers)}, no answer {answers.count(0)},"
        f" never accepted {verdict.not_accepted}"
    )
    print(
        f"\nchaos table: {started_at:%Y-%m-%d %H:%M} UTC, {platform.machine()} {os.cpu_count()} cores,"
        f" seed {seed}, {count} files, {elapsed:.0f}s"
    )
    print(verdict.table())
    for line in verdict.lost[:20]:
        print(f"  lost: {line}")
    if not verdict.ok:
        print(f"chaos: FAILED (replay with --seed {seed})", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

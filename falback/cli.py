"""The `falback` command: migrate, backfill, status, worker, relay, sweep, cron, verify,
restore, up, demo.

Every command but `up` and `demo` runs against the servers that DATABASE_URL / REDIS_URL name and
stops with exit code 2 when one it needs is unset; only `up` (and the tests) start
embedded servers, from the dev kit (`demo` always does, in a data folder of its own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from redis import Redis

from core.config import Config, ConfigError
from core.kinds import BACKFILL_TYPES
from core.logs import setup_logging
from db import app_sync, figures, ledger
from db.connection import connection
from db.migrate import migrate
from falback import recovery


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="falback", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="apply database migrations (safe to run twice)")
    fill = commands.add_parser("backfill", help="add existing files to the backlog, most valuable first")
    fill.add_argument("--type", required=True, choices=list(BACKFILL_TYPES))
    fill.add_argument("--limit", required=True, type=int)
    fill.add_argument("--dry-run", action="store_true", help="show what would be added")
    status = commands.add_parser("status", help="backup progress, files at risk, alarms")
    status.add_argument("--watch", action="store_true", help="live progress bars until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws")
    work = commands.add_parser("worker", help="run an RQ worker on the backup queues")
    work.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    work.add_argument("--fork", action="store_true", help="run each job in a forked work horse")
    retry = commands.add_parser("retry-failed", help="give failed files new attempts (after a fix)")
    retry.add_argument("--type", default="all", choices=list(BACKFILL_TYPES))
    commands.add_parser("relay", help="turn Postgres NOTIFYs from the app tables into backup work")
    commands.add_parser("sweep", help="dispatch whatever the queues lost or never got (one pass)")
    commands.add_parser("cron", help="schedule the periodic sweep, the daily backfill and the verify")
    recovery.add_parsers(commands)
    commands.add_parser("drive-check", help="check the Google Drive settings with a test upload")
    commands.add_parser("drive-login", help="sign a personal Google account in (device flow)")
    up = commands.add_parser("up", help="run every Procfile process (embedded servers if unset)")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument(
        "--demo", action="store_true", help="add sample app tables whose files come from a local stand-in CDN"
    )
    demo = commands.add_parser(
        "demo", help="offline demo: 507 files like the user's, backed up to a Drive emulator"
    )
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--full-size",
        action="store_true",
        help="the user's real sizes (5.96 GB, generated on the fly) instead of 1/100",
    )
    demo.add_argument(
        "--drive",
        choices=("personal", "service-account"),
        default="personal",
        help="sign a personal Google account in (drive-login, the default) or use a service account",
    )
    demo.add_argument(
        "--exit-when-done", action="store_true", help="stop once every file is safe (else run until Ctrl-C)"
    )
    demo.add_argument("--timeout", type=float, help="give up (exit 1) after this many seconds")
    args = parser.parse_args(argv)

    try:
        config = Config.from_env()
    except ConfigError as e:
        print(f"falback: configuration error: {e}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    if args.command == "drive-check":  # needs no database
        from jobs.destinations.drive_check import drive_check

        return drive_check(config)
    if args.command == "demo":
        from devkit.demo import run_demo

        return run_demo(
            config,
            args.port,
            full_size=args.full_size,
            drive_mode=args.drive,
            exit_when_done=args.exit_when_done,
            timeout=args.timeout,
        )
    if args.command == "up":
        from devkit.services import running_services

        with running_services(config) as config:
            return _up(config, args.port, args.demo)
    missing = [
        name
        for name, value in (("DATABASE_URL", config.database_url), ("REDIS_URL", config.redis_url))
        if value is None and name in _NEEDS[args.command]
    ]
    if missing:
        print(
            f"falback {args.command}: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
            " not set. Point it at your server (see README, Configuration), or run"
            " `falback up` for a development stack on embedded servers.",
            file=sys.stderr,
        )
        return 2
    if args.command == "drive-login":
        from jobs.destinations.drive_login import drive_login

        if config.drive is None:
            print(
                "falback drive-login: Google Drive is not configured; see docs/google-drive.md",
                file=sys.stderr,
            )
            return 2
        assert config.database_url
        return drive_login(config.drive, config.database_url, redis_url=config.redis_url)
    if args.command == "migrate":
        assert config.database_url
        applied = migrate(config.database_url)
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
        return 0
    if args.command == "backfill":
        return _backfill(config, args.type, args.limit, args.dry_run)
    if args.command == "status":
        from falback.status import print_status, watch

        return watch(config, args.interval) if args.watch else print_status(config)
    if args.command == "worker":
        return _worker(config, args.burst, args.fork)
    if args.command == "retry-failed":
        return _retry_failed(config, args.type)
    if args.command == "verify":
        return recovery.run_verify(config, args)
    if args.command == "restore":
        return recovery.run_restore(config, args)
    return _relay_sweep_cron(config, args.command)


_BOTH = ("DATABASE_URL", "REDIS_URL")
# The servers each command talks to.
_NEEDS: dict[str, tuple[str, ...]] = {
    "migrate": ("DATABASE_URL",),
    "status": ("DATABASE_URL",),
    "cron": ("REDIS_URL",),
    "drive-login": ("DATABASE_URL",),
    "backfill": _BOTH,
    "worker": _BOTH,
    "retry-failed": _BOTH,
    "relay": _BOTH,
    "sweep": _BOTH,
    "verify": _BOTH,
    "restore": ("DATABASE_URL",),
}


def _retry_failed(config: Config, type_: str) -> int:
    """Failed rows back to 'pending' (the backlog), then a top-up dispatches what fits."""
    from jobs.dispatch import top_up_for

    assert config.database_url and config.redis_url
    with connection(config.database_url) as conn:
        rows = ledger.reset_failed(conn, BACKFILL_TYPES[type_])
        for row in rows:
            app_sync.sync_app_row(conn, row["source_table"], row["source_id"])
        conn.commit()
        print(f"{len(rows)} failed file(s) back to pending")
        dispatched = top_up_for(
            conn, Redis.from_url(config.redis_url), config, [(r["id"], r["kind"]) for r in rows]
        )
    print(f"dispatched {len(dispatched)} file(s) now; the rest wait in the backlog for a free worker")
    return 0


def _backfill(config: Config, type_: str, limit: int, dry_run: bool) -> int:
    from jobs.backfill import BackfillError, backfill, validate

    assert config.database_url and config.redis_url
    try:
        validate(config, type_, limit)
        with connection(config.database_url) as conn:
            summary = backfill(
                config,
                conn,
                Redis.from_url(config.redis_url),
                type_,
                limit,
                dry_run=dry_run,
            )
    except BackfillError as e:
        print(f"falback backfill: {e}", file=sys.stderr)
        return 2
    verb = "would add" if dry_run else "added"
    print(
        f"{verb} {summary.files} file(s), {figures.size(summary.bytes)}, to the backlog"
        + ("" if dry_run else f"; {summary.dispatched} on the queues now, the rest as workers free up")
    )
    for kind, totals in summary.per_kind.items():
        print(f"  {kind:<8} {totals['files']:>8} files {figures.size(totals['bytes']):>10}")
    return 0


def _worker(config: Config, burst: bool, fork: bool) -> int:
    from jobs.queues import worker_queues
    from jobs.worker import make_worker

    assert config.redis_url
    # Import the job code here, once: with --fork each job runs in a work horse forked from
    # this process, which would otherwise import it again (seconds on a busy machine) per file.
    import jobs.backup  # noqa: F401

    if config.drive is not None:
        import jobs.destinations.drive  # noqa: F401
    redis = Redis.from_url(config.redis_url)
    worker = make_worker(config, redis, worker_queues(redis), fork=fork)
    try:
        worker.work(with_scheduler=True, burst=burst)
    finally:
        worker.context.close()
    return 0


def _relay_sweep_cron(config: Config, command: str) -> int:
    from redis import RedisError

    if command == "relay":
        from listener.relay import run_relay

        return run_relay(config)
    if command == "cron":
        from jobs.schedule import run_cron

        return run_cron(config)
    from jobs.sweep import run_sweep

    try:
        counts = run_sweep(config)
    except RedisError as e:
        print(
            f"falback sweep: Redis unavailable ({e}); rows stay pending for the next sweep", file=sys.stderr
        )
        return 1
    print(f"sweep: {counts}" if counts else "sweep: skipped, another sweep is running")
    return 0


def _up(config: Config, port: int, demo: bool) -> int:
    from devkit import supervisor

    assert config.database_url
    migrate(config.database_url)
    extra_env: dict[str, str] = {}
    cdn = None
    if demo:
        from devkit.demo import seed
        from devkit.fakecdn import FakeCdn

        cdn = FakeCdn().start()
        seed(config.database_url, cdn)
        extra_env = {"FALBACK_SOURCE_HOSTS": "127.0.0.1", "FALBACK_ALLOW_LOOPBACK_SOURCES": "true"}
    token, made_up = supervisor.admin_token(config)
    # A configured token is the operator's secret: never echoed, only referred to.
    where = (
        f"admin token: {token}, kept in {supervisor.admin_token_path(config)}"
        if made_up
        else "admin token: the one in FALBACK_ADMIN_TOKEN"
    )
    bearer = token if made_up else "$FALBACK_ADMIN_TOKEN"
    print(
        f"falback on http://127.0.0.1:{port}  ({where})\n"
        f'  curl -X POST http://127.0.0.1:{port}/backfill -H "Authorization: Bearer {bearer}"'
        f' -H \'Content-Type: application/json\' -d \'{{"type": "upscale", "limit": 10}}\'\n'
        f"  status page: http://127.0.0.1:{port}/status (any user name, the admin token as password)",
        flush=True,
    )
    try:
        return supervisor.run(config, extra_env, port)
    finally:
        if cdn is not None:
            cdn.stop()


if __name__ == "__main__":
    sys.exit(main())

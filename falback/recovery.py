"""`falback verify` and `falback restore`: their arguments, progress and tables (rich).
The work itself is in jobs/verify.py and jobs/restore.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from redis import Redis, RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.config import Config
from core.kinds import KIND_NAMES
from db import figures
from db.connection import connection
from jobs.destinations import NAMES

# Without a terminal (a log, a pipe), one progress line per this many files.
LINE_EVERY = 100


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    check = commands.add_parser("verify", help="check the copies where they are kept; re-queue bad ones")
    check.add_argument("--sample", type=_positive, metavar="N", help="check N random copies only")
    check.add_argument("--destination", choices=list(NAMES), help="check this destination only")
    back = commands.add_parser("restore", help="read the copies back into a folder")
    back.add_argument("dir", type=Path, metavar="DIR", help="where to write DIR/<kind>/<name>")
    back.add_argument("--type", choices=list(KIND_NAMES), help="only files of this kind")
    back.add_argument(
        "--since", type=date.fromisoformat, metavar="YYYY-MM-DD", help="only files created since"
    )
    back.add_argument("--ids", type=_ids, metavar="1,2,3", help="only these ledger ids")
    back.add_argument("--destination", choices=list(NAMES), help="read from this destination only")


def run_verify(config: Config, args: argparse.Namespace) -> int:
    from jobs.verify import verify

    assert config.database_url and config.redis_url
    console = Console()
    try:
        with connection(config.database_url) as conn, _progress("verifying", "copies") as tick:
            report = verify(
                config,
                conn,
                Redis.from_url(config.redis_url),
                destination=args.destination,
                sample=args.sample,
                progress=lambda done, total: tick(done, total, 0),
            )
    except ValueError as e:
        print(f"falback verify: {e}", file=sys.stderr)
        return 2
    except RedisError as e:
        print(
            f"falback verify: Redis unavailable ({e}); the files found bad are back to pending"
            " and the next sweep enqueues them",
            file=sys.stderr,
        )
        return 1
    table = Table(title="falback verify")
    for column in ("destination", "checked", "ok", "missing", "wrong", "not checked"):
        table.add_column(column, justify="left" if column == "destination" else "right")
    for name, t in sorted(report.tallies.items()):
        table.add_row(name, *(str(v) for v in (t.checked, t.ok, t.missing, t.wrong, t.errors)))
    console.print(table)
    if report.problems:
        bad = Table(title="copies not whole")
        for column in ("ledger id", "destination", "outcome", "reason"):
            bad.add_column(column)
        for p in report.problems:
            bad.add_row(str(p.ledger_id), p.destination, p.outcome, p.reason)
        console.print(bad)
    for name, why in report.unconfigured.items():
        console.print(f"copies at {name} not checked: {why}")
    for name, why in report.unreachable.items():
        console.print(f"copies at {name} not checked, nothing re-queued there: {why}")
    if report.requeued:
        console.print(f"re-queued {len(report.requeued)} file(s): ledger {_joined(report.requeued)}")
    if not report.tallies:
        console.print("no copies to check")
    return 0 if report.clean else 1


def run_restore(config: Config, args: argparse.Namespace) -> int:
    from jobs.restore import restore

    assert config.database_url
    try:
        with connection(config.database_url) as conn, _progress("restoring", "files") as tick:
            report = restore(
                config,
                conn,
                args.dir,
                kinds=[args.type] if args.type else None,
                since=args.since,
                ids=args.ids,
                destination=args.destination,
                progress=tick,
            )
    except (ValueError, OSError) as e:
        print(f"falback restore: {e}", file=sys.stderr)
        return 2
    for line in report.failures:
        print(line, file=sys.stderr)
    for name, why in report.unconfigured.items():
        print(f"copies at {name} not read: {why}")
    for name, why in report.unreachable.items():
        print(f"copies at {name} not read: {why}", file=sys.stderr)
    print(
        f"restore: {report.files} file(s) selected, {report.restored} restored"
        f" ({figures.size(report.bytes)}), {report.skipped} already there,"
        f" {report.unrestored} not restored, {len(report.failures)} failure(s)"
    )
    return 0 if report.clean else 1


Tick = Callable[[int, int, int], None]


@contextmanager
def _progress(verb: str, unit: str) -> Iterator[Tick]:
    """A progress bar on a terminal (stderr), else a line every LINE_EVERY items."""
    if not sys.stderr.isatty():

        def line(done: int, total: int, _bytes: int) -> None:
            if done % LINE_EVERY == 0 or done == total:
                print(f"{verb} {done}/{total} {unit}", file=sys.stderr, flush=True)

        yield line
        return
    with Progress(
        TextColumn(f"{verb} {unit}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(verb, total=None)

        def tick(done: int, total: int, _bytes: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tick


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ledger ids like 1,2,3, got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("no ledger ids given")
    return ids


def _joined(ids: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")

"""`falback status`: progress per file type, what is at risk of expiring, alarms; and
`--watch`, live progress bars (rich) until Ctrl-C. The figures are the status page's."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from core.config import Config
from core.lifecycle import GracefulStop
from db import figures
from db.connection import connection
from falback.drive_status import drive_lines

AT_RISK_SHOWN = 5


def print_status(config: Config) -> int:
    assert config.database_url
    with connection(config.database_url, application_name="falback-status") as conn:
        found = figures.collect(conn, at_risk_limit=AT_RISK_SHOWN, configured=config.destination_names)
    print(
        f"{'type':<8} {'files':>7} {'backed up':>9} {'failed':>6} {'gone':>5}"
        f" {'active':>6} {'new':>5} {'done %':>7} {'bytes done':>11} {'remaining':>10}"
    )
    for k in found.kinds:
        percent = 100 * k.backed_up / k.files if k.files else 0
        print(
            f"{k.kind:<8} {k.files:>7} {k.backed_up:>9} {k.failed:>6} {k.gone:>5}"
            f" {k.in_progress:>6} {k.not_in_ledger:>5} {percent:>6.1f}%"
            f" {figures.size(k.bytes_done):>11} {figures.size(k.bytes_remaining):>10}"
        )
    print()
    for line in destination_lines(found):
        print(line)
    print()
    for line in at_risk_lines(found):
        print(line)
    for alarm in found.alarms():
        print(f"ALARM: {alarm}")
    for line in drive_lines(config):
        print(line)
    if found.unresolved_deliveries:
        print(
            f"unresolved fal deliveries: {found.unresolved_deliveries}"
            " (result not fetched; see fal_deliveries.note)"
        )
    return 0


def destination_lines(found: figures.Figures) -> list[str]:
    """Copies per destination, and whether it takes uploads now."""
    paused = {p["destination"] for p in found.paused}
    lines = [f"{'destination':<12} {'copies':>7} {'bytes':>11}  state"]
    for name, held in found.destinations.items():
        state = "paused" if name in paused else "ok"
        lines.append(f"{name or 'unknown':<12} {held['files']:>7} {figures.size(held['bytes']):>11}  {state}")
    return lines


def at_risk_lines(found: figures.Figures) -> list[str]:
    if not found.not_safe:
        return ["at risk: nothing (every known file has a verified copy, or is gone)"]
    lines = [f"at risk: {found.not_safe} file(s) not yet safe"]
    if found.earliest_expiry is not None:
        first = (found.earliest_expiry - found.now).total_seconds()
        lines[0] += f"; the first may expire at fal in {figures.duration(first)}"
    eta = found.eta_seconds()
    pace = (
        f"{found.done_last_hour} file(s) in the last hour, backlog done in about {figures.duration(eta)}"
        if eta
        else "no copies in the last hour"
    )
    lines.append(f"  pace: {pace}")
    for row in found.at_risk:
        left = "?" if row["seconds_left"] is None else figures.duration(row["seconds_left"])
        lines.append(
            f"  ledger {row['id']:<8} {row['kind']:<8} {row['status']:<9} {left:>10} left"
            + (f"  {row['last_error'][:80]}" if row["last_error"] else "")
        )
    return lines


def watch(config: Config, interval: float) -> int:
    """Redraw progress bars every `interval` seconds until Ctrl-C."""
    assert config.database_url
    console = Console()
    progress = Progress(
        TextColumn("{task.description:<8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
    )
    tasks: dict[str, TaskID] = {}
    # Ctrl-C sets a flag the loop checks, rather than raising KeyboardInterrupt wherever
    # it lands: inside rich's Live it could leave its lock held and the exit hanging.
    stop = GracefulStop().install()
    try:
        with (
            connection(config.database_url, application_name="falback-status") as conn,
            Live(console=console, refresh_per_second=4) as live,
        ):
            while not stop.requested:
                found = figures.collect(conn, at_risk_limit=AT_RISK_SHOWN)
                conn.rollback()
                for k in found.kinds:
                    detail = (
                        f"{figures.size(k.bytes_done)} of {figures.size(k.bytes_total)}, {k.failed} failed"
                    )
                    if k.kind not in tasks:
                        tasks[k.kind] = progress.add_task(k.kind, total=k.files or 1, detail=detail)
                    progress.update(
                        tasks[k.kind], total=max(k.files, 1), completed=k.backed_up, detail=detail
                    )
                footer = Table.grid()
                for line in [*at_risk_lines(found), *(f"ALARM: {a}" for a in found.alarms())]:
                    footer.add_row(line)
                grid = Table.grid()
                grid.add_row(progress)
                grid.add_row(footer)
                live.update(grid)
                stop.wait(interval)
        return 0
    finally:
        stop.close()

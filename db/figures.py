"""What an operator looks at: progress, files at risk of expiring, failures by reason,
throughput and the backlog's ETA. One set of queries behind the status page, its JSON
twin, `falback status` and the Prometheus metrics, so they always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from core.kinds import KIND_NAMES
from db import app_rows, deliveries
from db.connection import Connection, fetch_all, fetch_one
from db.ledger import PRIORITY_ORDER

NOT_SAFE = ("pending", "queued", "copying", "retrying", "failed")
# Throughput is measured over this window; the ETA assumes it holds.
THROUGHPUT_WINDOW = timedelta(hours=1)


@dataclass
class KindProgress:
    kind: str
    files: int = 0
    backed_up: int = 0
    failed: int = 0
    gone: int = 0
    in_progress: int = 0
    not_in_ledger: int = 0
    bytes_total: int = 0
    bytes_done: int = 0

    @property
    def bytes_remaining(self) -> int:
        return max(self.bytes_total - self.bytes_done, 0)


@dataclass
class Figures:
    now: datetime
    kinds: list[KindProgress]
    destinations: dict[str, dict[str, int]]  # destination -> copies held: {"files", "bytes"}
    paused: list[dict[str, Any]]  # destination, paused_until, reason
    at_risk: list[dict[str, Any]]  # not yet safe, soonest expiry first
    failures: list[dict[str, Any]]  # reason, files, bytes
    done_last_hour: int
    bytes_last_hour: int
    unresolved_deliveries: int
    not_safe: int = 0
    oldest_not_safe: datetime | None = None
    earliest_expiry: datetime | None = None
    queues: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_remaining(self) -> int:
        return sum(k.bytes_remaining for k in self.kinds if k.kind in KIND_NAMES)

    @property
    def files_remaining(self) -> int:
        return sum(k.files - k.backed_up - k.gone for k in self.kinds)

    def eta_seconds(self) -> float | None:
        """Seconds until the backlog is copied at the last hour's pace (None: no pace yet)."""
        if self.files_remaining == 0:
            return 0.0
        window = THROUGHPUT_WINDOW.total_seconds()
        if self.bytes_last_hour > 0 and self.bytes_remaining > 0:
            return self.bytes_remaining / (self.bytes_last_hour / window)
        if self.done_last_hour > 0:
            return self.files_remaining / (self.done_last_hour / window)
        return None

    def alarms(self) -> list[str]:
        """Plain sentences for the red line: what may be lost, and why."""
        found = []
        for pause in self.paused:
            found.append(
                f"{pause['destination']} is paused until"
                f" {pause['paused_until']:%Y-%m-%d %H:%M} UTC: {pause['reason']}"
            )
        eta = self.eta_seconds()
        if self.earliest_expiry is not None and self.files_remaining:
            left = (self.earliest_expiry - self.now).total_seconds()
            if eta is None:
                found.append(
                    "nothing was copied in the last hour, and files are waiting"
                    f" (the first may expire in {duration(left)})"
                )
            elif eta > left:
                found.append(
                    f"the backlog needs about {duration(eta)} at the last hour's pace,"
                    f" but the first file may expire in {duration(left)}"
                )
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "kinds": [{**asdict(k), "bytes_remaining": k.bytes_remaining} for k in self.kinds],
            "destinations": self.destinations,
            "paused": [{**p, "paused_until": p["paused_until"].isoformat()} for p in self.paused],
            "at_risk": [
                {**r, "expires_at": _iso(r["expires_at"]), "seconds_left": r["seconds_left"]}
                for r in self.at_risk
            ],
            "failures": self.failures,
            "throughput_last_hour": {"files": self.done_last_hour, "bytes": self.bytes_last_hour},
            "eta_seconds": self.eta_seconds(),
            "not_safe": self.not_safe,
            "oldest_not_safe": _iso(self.oldest_not_safe),
            "earliest_expiry": _iso(self.earliest_expiry),
            "unresolved_fal_deliveries": self.unresolved_deliveries,
            "queues": self.queues,
            "alarms": self.alarms(),
        }


# Verified copies each destination holds (a file copied to two counts at both, a file still
# waiting for its second copy at the first). Done rows with no copy row (recorded by a
# version before the copies table, during a rolling deploy) count by the ledger's columns.
_COPIES_PER_DESTINATION = """
    SELECT destination, count(*) AS files, coalesce(sum(size_bytes), 0)::bigint AS bytes
    FROM (SELECT destination, size_bytes FROM copies
          UNION ALL
          SELECT l.destination, l.size_bytes FROM ledger l
          WHERE l.status = 'done' AND l.destination IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM copies c
                            WHERE c.ledger_id = l.id AND c.destination = l.destination)) held
    GROUP BY destination ORDER BY destination
"""


def collect(conn: Connection, *, at_risk_limit: int = 50, configured: Sequence[str] = ()) -> Figures:
    """The figures; every destination in `configured` is listed, with no copies yet too."""
    with conn.cursor() as cur:
        cur.execute("SELECT now() AS now")
        now_row = fetch_one(cur)
        assert now_row is not None
        now: datetime = now_row["now"]
        cur.execute(
            f"""
            SELECT kind, count(*) AS files,
                   count(*) FILTER (WHERE status = 'done') AS backed_up,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'gone') AS gone,
                   count(*) FILTER (WHERE status IN ('pending', 'queued', 'copying', 'retrying'))
                       AS in_progress,
                   coalesce(sum(coalesce(size_bytes, expected_size, 0))
                       FILTER (WHERE status <> 'gone'), 0)::bigint AS bytes_total,
                   coalesce(sum(size_bytes) FILTER (WHERE status = 'done'), 0)::bigint AS bytes_done
            FROM ledger GROUP BY kind ORDER BY {PRIORITY_ORDER}
            """
        )
        by_kind = {r["kind"]: KindProgress(**r) for r in fetch_all(cur)}
        cur.execute(_COPIES_PER_DESTINATION)
        destinations = {name: {"files": 0, "bytes": 0} for name in configured}
        destinations.update(
            {r["destination"]: {"files": r["files"], "bytes": r["bytes"]} for r in fetch_all(cur)}
        )
        cur.execute(
            "SELECT destination, paused_until, reason FROM destination_pauses"
            " WHERE paused_until > now() ORDER BY destination"
        )
        paused = [dict(r) for r in fetch_all(cur)]
        cur.execute(
            """
            SELECT id, kind, status, source_table, source_id, attempts, last_error,
                   coalesce(size_bytes, expected_size) AS size, expires_at,
                   extract(epoch FROM expires_at - now())::float AS seconds_left
            FROM ledger WHERE status = ANY(%s)
            ORDER BY expires_at NULLS LAST, id LIMIT %s
            """,
            (list(NOT_SAFE), at_risk_limit),
        )
        at_risk = [dict(r) for r in fetch_all(cur)]
        cur.execute(
            """
            SELECT last_error AS reason, count(*) AS files,
                   coalesce(sum(coalesce(size_bytes, expected_size, 0)), 0)::bigint AS bytes
            FROM ledger WHERE status = 'failed'
            GROUP BY last_error ORDER BY count(*) DESC, last_error LIMIT 50
            """
        )
        failures = [dict(r) for r in fetch_all(cur)]
        cur.execute(
            """
            SELECT count(*) AS files, coalesce(sum(size_bytes), 0)::bigint AS bytes
            FROM ledger WHERE status = 'done' AND done_at > now() - %s
            """,
            (THROUGHPUT_WINDOW,),
        )
        pace = fetch_one(cur)
        cur.execute(
            "SELECT count(*) AS n, min(created_at) AS oldest, min(expires_at) AS earliest"
            " FROM ledger WHERE status = ANY(%s)",
            (list(NOT_SAFE),),
        )
        risk = fetch_one(cur)
    assert pace is not None and risk is not None
    for unseen in app_rows.not_in_ledger(conn):
        progress = by_kind.setdefault(unseen["kind"], KindProgress(unseen["kind"]))
        progress.not_in_ledger = unseen["files"]
        progress.files += unseen["files"]
        progress.bytes_total += unseen["bytes"]
    kinds = [by_kind.get(k) or KindProgress(k) for k in KIND_NAMES]
    return Figures(
        now=now,
        kinds=kinds,
        destinations=destinations,
        paused=paused,
        at_risk=at_risk,
        failures=failures,
        done_last_hour=pace["files"],
        bytes_last_hour=pace["bytes"],
        unresolved_deliveries=deliveries.unresolved_count(conn),
        not_safe=risk["n"],
        oldest_not_safe=risk["oldest"],
        earliest_expiry=risk["earliest"],
    )


def duration(seconds: float) -> str:
    """`2d 4h`, `3h 10m`, `12m`, `40s`; negative as `expired 3h ago`."""
    if seconds < 0:
        return f"expired {duration(-seconds)} ago"
    s = int(seconds)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{s}s"


def size(n: int | None) -> str:
    """`512 B`, `3.9 KB`, `5.6 GB` (binary units, as pg_size_pretty)."""
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None

"""The relay: Postgres NOTIFY -> ledger rows -> backup jobs, within a second or so.

Triggers on the app tables (migrations 0002 + repeatable/notify_triggers.sql) send
`{"table": ..., "id": ...}` on channel `falback_media` when a row gets a media URL. The
relay LISTENs on its own autocommit connection and, for each notified app row, creates
or links the ledger rows and brings the app row's backup_* columns up to date
(`app_rows.upsert_app_rows`: a file linked after it was copied gets no job to do it), then
dispatches those still 'pending' (`dispatch.top_up_for`, the path every producer shares).
Notifications that arrive together are handled as one batch.

NOTIFY is fire-and-forget: whatever is sent while the relay is not listening is lost.
So after every (re)connect the relay LISTENs first and then sweeps (jobs.sweep), the
order PostgreSQL documents for not missing anything. If Redis is down, the ledger rows
stay 'pending' and the relay sweeps again once Redis answers. Postgres going away means
reconnecting with exponential backoff and jitter; the process itself never gives up.

LISTEN needs a session of its own: a direct connection or a session-mode pooler, never
a transaction-mode pooler (PgBouncer transaction mode, Supabase port 6543).
"""

from __future__ import annotations

import json
import logging
import select
import time
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from redis import Redis, RedisError

from core.config import Config
from core.kinds import APP_TABLES
from core.lifecycle import Backoff, GracefulStop
from db import app_rows
from db.connection import Connection, connect
from jobs.dispatch import top_up_for
from jobs.sweep import sweep

log = logging.getLogger(__name__)

CHANNEL = "falback_media"
# select() timeout: how often an idle relay checks its connection and retries a sweep.
IDLE_SECONDS = 5.0
# After a notification, wait this long for more before handling the batch.
GATHER_SECONDS = 0.05
MAX_BATCH = 500
_LOGGED = 20  # ids per log line; each app row has its own line anyway
# Connection-level failures: reconnect. Other database errors are about the data.
_CONNECTION_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


@dataclass(frozen=True)
class AppRow:
    table: str
    id: str


def parse_payload(payload: str) -> AppRow | None:
    """The app row a notification names, or None if it is not one of ours."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    table, row_id = data.get("table"), data.get("id")
    if table not in APP_TABLES or isinstance(row_id, bool) or not isinstance(row_id, int | str):
        return None
    return AppRow(table, str(row_id))


class Relay:
    def __init__(self, config: Config, stop: GracefulStop) -> None:
        self.config = config
        self.stop = stop
        self._redis: Redis | None = None
        self._sweep_due = True
        self._next_sweep = 0.0
        # Retrying a failed sweep (Redis down): first after ~5 s, then up to every minute.
        self._sweep_backoff = Backoff(base=IDLE_SECONDS, cap=60.0)

    def run(self) -> int:
        """Relay until SIGTERM/SIGINT; return the exit code (0)."""
        assert self.config.database_url and self.config.redis_url
        self._redis = Redis.from_url(self.config.redis_url, socket_connect_timeout=5, socket_timeout=30)
        backoff = Backoff()
        try:
            while not self.stop.requested:
                try:
                    self._session(backoff)
                except _CONNECTION_ERRORS as e:
                    if self.stop.requested:
                        break
                    delay = backoff.next()
                    log.warning("postgres unavailable (%s); reconnecting in %.1fs", _one_line(e), delay)
                    self.stop.wait(delay)
        finally:
            self._redis.close()
        log.info("relay stopped")
        return 0

    def _session(self, backoff: Backoff) -> None:
        """One connection's lifetime: LISTEN, catch up, then relay until it breaks."""
        assert self.config.database_url
        # TCP keepalives notice a silently dropped connection (no FIN) within about a minute.
        listener = psycopg2.connect(
            self.config.database_url,
            application_name="falback-relay-listen",
            connect_timeout=10,
            keepalives=1,
            keepalives_idle=30,
            keepalives_interval=10,
            keepalives_count=3,
        )
        work: Connection | None = None
        try:
            listener.autocommit = True
            with listener.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            work = connect(self.config.database_url, application_name="falback-relay")
            log.info("listening on channel %s", CHANNEL)
            # LISTEN is in effect; now read state, so nothing committed before it is missed.
            self._sweep_due, self._next_sweep = True, 0.0
            self._maybe_sweep(work)
            backoff.reset()
            while not self.stop.requested:
                batch = self._wait_for_batch(listener)
                if batch:
                    self._handle(work, batch)
                self._maybe_sweep(work)
        finally:
            listener.close()
            if work is not None:
                work.close()

    def _wait_for_batch(self, listener: psycopg2.extensions.connection) -> list[AppRow]:
        # Notifications left over from a full batch are already read: do not wait for more.
        timeout = 0.0 if listener.notifies else IDLE_SECONDS
        ready, _, _ = select.select([listener.fileno(), self.stop.fileno()], [], [], timeout)
        if self.stop.requested:
            return []
        if listener.fileno() in ready:
            listener.poll()
        elif not listener.notifies:
            # Idle: a round trip proves the connection is alive (poll() alone cannot).
            with listener.cursor() as cur:
                cur.execute("SELECT 1")
        batch: dict[AppRow, None] = {}
        deadline = time.monotonic() + GATHER_SECONDS
        while True:
            while listener.notifies and len(batch) < MAX_BATCH:
                note = listener.notifies.pop(0)
                row = parse_payload(note.payload)
                if row is None:
                    log.warning("ignoring notification %r from pid %s", note.payload, note.pid)
                else:
                    batch[row] = None
            remaining = deadline - time.monotonic()
            if not batch or len(batch) >= MAX_BATCH or remaining <= 0:
                break
            if select.select([listener], [], [], remaining)[0]:
                listener.poll()
        return list(batch)

    def _handle(self, work: Connection, batch: list[AppRow]) -> None:
        pending: list[tuple[int, str]] = []
        try:
            # One call per batch: the app rows' backup_* columns are synced together.
            found = app_rows.upsert_app_rows(work, [(r.table, r.id) for r in batch], self.config.expiry_days)
            for app_row, rows in zip(batch, found, strict=True):
                log.info(
                    "%s %s: %s",
                    app_row.table,
                    app_row.id,
                    ", ".join(f"ledger {r['id']} {r['kind']} {r['status']}" for r in rows) or "no media URL",
                )
                pending += [(r["id"], r["kind"]) for r in rows if r["status"] == "pending"]
            work.commit()
        except _CONNECTION_ERRORS:
            raise
        except psycopg2.Error as e:
            # About the data (say, the app view changed shape): the sweep retries these.
            work.rollback()
            log.error("could not record %s: %s", _names(batch), _one_line(e))
            self._schedule_sweep()
            return
        if not pending:
            return
        assert self._redis is not None
        try:
            dispatched = top_up_for(work, self._redis, self.config, pending)
        except RedisError as e:
            work.rollback()
            log.warning(
                "redis unavailable (%s): ledger %s stay pending until a sweep dispatches them",
                e,
                _ids(pending),
            )
            self._schedule_sweep()
            return
        log.info("ledger %s in the backlog, %d dispatched at once", _ids(pending), len(dispatched))

    def _schedule_sweep(self) -> None:
        if not self._sweep_due:
            self._sweep_due, self._next_sweep = True, time.monotonic() + self._sweep_backoff.next()

    def _maybe_sweep(self, work: Connection) -> None:
        """Sweep if one is due: after a (re)connect, or to retry after a failure."""
        if not self._sweep_due or time.monotonic() < self._next_sweep:
            return
        assert self._redis is not None
        try:
            counts = sweep(self.config, work, self._redis)
        except _CONNECTION_ERRORS:
            raise
        except (RedisError, psycopg2.Error) as e:
            work.rollback()
            delay = self._sweep_backoff.next()
            self._next_sweep = time.monotonic() + delay
            log.warning("sweep failed (%s); retrying in %.0fs", _one_line(e), delay)
            return
        if counts is None:
            # Another sweep may have read the tables before our LISTEN: sweep ourselves.
            self._next_sweep = time.monotonic() + IDLE_SECONDS
            return
        self._sweep_due = False
        self._sweep_backoff.reset()


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _names(batch: list[AppRow]) -> str:
    return ", ".join(f"{r.table} {r.id}" for r in batch[:_LOGGED]) + _more(batch)


def _ids(rows: list[tuple[int, str]]) -> str:
    return ", ".join(str(i) for i, _ in rows[:_LOGGED]) + _more(rows)


def _more(items: list[Any]) -> str:
    return f" and {len(items) - _LOGGED} more" if len(items) > _LOGGED else ""


def run_relay(config: Config) -> int:
    stop = GracefulStop().install()
    try:
        return Relay(config, stop).run()
    finally:
        stop.close()

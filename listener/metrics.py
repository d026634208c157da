"""GET /metrics: Prometheus text, behind the admin token (Prometheus sends it as a bearer).

Two sources, so the figures are right however many processes and hosts run falback:
- counted here, per web request: webhooks by endpoint and outcome, kept in prometheus-
  client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set (gunicorn.conf.py sets
  it for several gunicorn processes), so every process's counts add up;
- read at scrape time from Postgres and Redis: files by kind and status (the jobs'
  outcomes, whichever worker on whichever host ran them), bytes copied, queue depth,
  files not yet safe, the age of the oldest, seconds until the earliest expiry, and
  which destinations are paused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from db import figures
from db.connection import Connection, fetch_all
from jobs.queues import counts as queue_counts
from listener.auth import admin_denied
from listener.context import get_config, get_db, get_redis

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)

WEBHOOKS = Counter(
    "falback_webhooks", "Webhook requests answered, by endpoint and HTTP status", ["endpoint", "status"]
)
_WEBHOOK_ENDPOINTS = {"fal_webhook.receive": "fal", "app_webhook.receive": "app"}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.after_request(_count_webhook)


def _count_webhook(response: Response) -> Response:
    endpoint = _WEBHOOK_ENDPOINTS.get(request.endpoint or "")
    if endpoint is not None:
        WEBHOOKS.labels(endpoint, str(response.status_code)).inc()
    return response


@bp.get("/metrics")
def metrics() -> Response:
    denied = admin_denied()
    if denied is not None:
        return denied
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(WEBHOOKS)
    configured = list(get_config().destination_names)
    registry.register(_ScrapeTime(get_db(), queue_counts(get_redis()), configured))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _ScrapeTime(Collector):
    """Figures read from Postgres and Redis when Prometheus asks."""

    def __init__(self, conn: Connection, queues: dict[str, int], destinations: list[str]) -> None:
        self.conn = conn
        self.queues = queues
        self.destinations = destinations

    def collect(self) -> Iterator[Metric]:
        found = figures.collect(self.conn, at_risk_limit=0, configured=self.destinations)
        with self.conn.cursor() as cur:
            cur.execute("SELECT kind, status, count(*) AS n FROM ledger GROUP BY kind, status")
            by_status = fetch_all(cur)
            cur.execute("SELECT destination FROM destination_pauses")
            known = [r["destination"] for r in fetch_all(cur)] + self.destinations
        self.conn.rollback()
        files = GaugeMetricFamily(
            "falback_files", "Ledger rows by kind and status", labels=["kind", "status"]
        )
        for row in by_status:
            files.add_metric([row["kind"], row["status"]], row["n"])
        yield files
        copied = GaugeMetricFamily(
            "falback_bytes_copied",
            "Bytes of the verified copies each destination holds",
            labels=["destination"],
        )
        held = GaugeMetricFamily(
            "falback_copies", "Verified copies each destination holds", labels=["destination"]
        )
        for destination, totals in found.destinations.items():
            copied.add_metric([destination or "unknown"], totals["bytes"])
            held.add_metric([destination or "unknown"], totals["files"])
        yield copied
        yield held
        depth = GaugeMetricFamily("falback_queue_depth", "Jobs waiting in each RQ queue", labels=["queue"])
        for queue, n in self.queues.items():
            depth.add_metric([queue], n)
        yield depth
        yield GaugeMetricFamily(
            "falback_files_not_safe",
            "Files with no verified copy yet (failed included)",
            value=found.not_safe,
        )
        oldest = found.oldest_not_safe
        yield GaugeMetricFamily(
            "falback_oldest_not_safe_age_seconds",
            "Age of the oldest file not yet safe",
            value=(found.now - oldest).total_seconds() if oldest else 0.0,
        )
        earliest = found.earliest_expiry
        # With nothing at risk there is no expiry to count down to: report a week.
        yield GaugeMetricFamily(
            "falback_earliest_expiry_seconds",
            "Seconds until the first file not yet safe may expire at fal (negative: overdue)",
            value=(earliest - found.now).total_seconds() if earliest else 7 * 86400.0,
        )
        paused = GaugeMetricFamily(
            "falback_destination_paused", "1 while a destination refuses uploads", labels=["destination"]
        )
        now_paused = {p["destination"] for p in found.paused}
        for destination in sorted(set(known) | now_paused):
            paused.add_metric([destination], 1.0 if destination in now_paused else 0.0)
        yield paused

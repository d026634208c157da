"""Record what fal reported: one ``fal_deliveries`` row per request and a ledger row per
file, committed together. Shared by the webhook (listener/fal_webhook.py) and the job that
fetches a result fal left out of its webhook (jobs/fal_results.py); enqueueing is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import Config
from db import deliveries
from db.connection import Connection, Row, statement_alone
from jobs.fal.api import unfetchable_reason
from jobs.fal.payload import AppLink, FalWebhook, UrlHints, WebhookKind
from jobs.fal.plan import NOTE_LIMIT, Plan, clip, optional, plan_files, record_files, recorded
from jobs.fal.walker import find_media


@dataclass
class Recorded:
    delivery_id: int
    duplicate: bool
    rows: list[tuple[int, str]]  # (ledger id, kind) of the rows created, to dispatch
    files: int
    fetch: bool  # a result to fetch from fal's queue API
    note: str | None


def record_webhook(
    conn: Connection, config: Config, hook: FalWebhook, hints: UrlHints, user_id: str | None
) -> Recorded:
    """Record a verified webhook and commit. A repeat of a request changes nothing; on any
    error nothing is committed (the caller's connection is left to roll back)."""
    plan: Plan | None = None
    notes = list(hints.ignored)  # first: the note is cut at its limit
    fetch = False
    if hook.kind is WebhookKind.MEDIA:
        plan = plan_files(hook.scan, request_id=hook.request_id, link=hints.link, fal_app=hints.fal_app)
        notes += plan.notes
    elif hook.kind is WebhookKind.ERROR:
        notes.append("fal reported an error; nothing to copy")
    else:
        reason = unfetchable_reason(config, hints.fal_app)
        fetch = reason is None
        notes.append(reason or "waiting for the result from fal's queue API")
    link = hints.link
    delivery = deliveries.Delivery(
        request_id=hook.request_id,
        gateway_request_id=optional(hook.gateway_request_id),
        fal_user_id=optional(user_id),
        status="ERROR" if hook.kind is WebhookKind.ERROR else "OK",
        error=clip(hook.error, 2000) if hook.kind is WebhookKind.ERROR and hook.error else None,
        payload_error=(
            clip(hook.error or "payload is null", 2000) if hook.kind is WebhookKind.PAYLOAD_ERROR else None
        ),
        source_table=link.source_table if link else None,
        source_id=link.source_id if link else None,
        variant=link.variant if link else None,
        fal_app=hints.fal_app,
        files=len(plan.files) if plan else 0,
        resolved=hook.kind is not WebhookKind.PAYLOAD_ERROR,
        note=clip("; ".join(notes), NOTE_LIMIT) if notes else None,
    )
    files = plan.files if plan else []
    # With nothing else to write, the delivery and its ledger rows are one statement, its
    # own transaction: the webhook is recorded in one round trip.
    with statement_alone(conn, alone=not (plan and plan.needs_more())):
        delivery_id, created = deliveries.insert_delivery(conn, delivery, files, config.expiry_days)
    if delivery_id is None:
        existing = deliveries.get_delivery_by_request(conn, hook.request_id)
        conn.commit()
        assert existing is not None
        # A repeat of an unresolved payload_error: fal retried, maybe because the first
        # answer was a 503 when the fetch job could not be queued. Queue it now.
        refetch = (
            not existing["resolved"]
            and existing["payload_error"] is not None
            and unfetchable_reason(config, existing["fal_app"]) is None
        )
        return Recorded(int(existing["id"]), True, [], int(existing["files"]), refetch, None)
    rows = recorded(conn, plan, created) if plan else []
    conn.commit()
    return Recorded(delivery_id, False, rows, delivery.files, fetch, delivery.note)


def record_result(conn: Connection, config: Config, delivery: Row, result: object) -> Recorded | None:
    """Record the files of a result fetched from the queue API for an unresolved delivery
    and commit; None when another run recorded it first."""
    scan = find_media(result, root="result", max_data_bytes=config.max_data_uri_bytes)
    plan = plan_files(
        scan, request_id=delivery["request_id"], link=stored_link(delivery), fal_app=delivery["fal_app"]
    )
    if not deliveries.resolve(conn, int(delivery["id"]), len(plan.files), plan.note()):
        conn.rollback()
        return None
    rows = record_files(conn, plan, config.expiry_days)
    conn.commit()
    return Recorded(int(delivery["id"]), False, rows, len(plan.files), False, plan.note())


def stored_link(delivery: Row) -> AppLink | None:
    if not delivery["source_table"]:
        return None
    return AppLink(delivery["source_table"], delivery["source_id"], delivery["variant"])

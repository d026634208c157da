"""Wake the backup jobs a paused destination held back, once the pause is over
(`falback drive-login` after a lost sign-in).

While Drive is paused each job is rescheduled (an RQ Retry) to the pause's end, hours
away; clearing the pause in Postgres alone would leave them asleep, and the sweep
counts a scheduled job as alive. So the jobs of the rows held back (still 'queued', or
'retrying' and due now) are moved from RQ's scheduled registries onto their queues.
"""

from __future__ import annotations

import logging

from redis import Redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError

from db.connection import Connection, fetch_all
from jobs.queues import job_id, queues

log = logging.getLogger(__name__)


def wake_held_back(conn: Connection, redis: Redis) -> int:
    """Run now the scheduled jobs of rows that are due; return how many were woken."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM ledger WHERE status = 'queued' OR (status = 'retrying'"
            " AND coalesce(next_attempt_at, now()) <= now())"
        )
        due = {job_id(int(r["id"])) for r in fetch_all(cur)}
    conn.commit()
    woken = 0
    for queue in queues(redis):
        registry = queue.scheduled_job_registry
        for scheduled in registry.get_job_ids():
            if scheduled in due:
                try:
                    registry.requeue(scheduled)
                except (InvalidJobOperation, NoSuchJobError):
                    continue  # it started meanwhile, or is gone (the sweep repairs that)
                woken += 1
    log.info("woke %d backup job(s) held back by the pause", woken)
    return woken

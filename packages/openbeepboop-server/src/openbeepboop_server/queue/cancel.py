"""Cancelling a job: a QUEUED or PROCESSING job becomes CANCELLED; a terminal one is left as is.

A cancelled PROCESSING job's lease ends with the outcome ``cancelled``, which
is how the node holding it learns at its next heartbeat (``leases.py``).
"""

from __future__ import annotations

import sqlalchemy as sa
from openbeepboop_schemas import PollEntry

from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import leases, transitions
from openbeepboop_server.queue.statuses import QUEUED, TERMINAL
from openbeepboop_server.queue.views import POLL_COLUMNS, poll_entry, visible_to


def cancel_job(
    conn: sa.Connection,
    caller: Caller,
    job_id: str,
    *,
    now: float,
    lock: bool,
    only_queued: bool = False,
) -> PollEntry | None:
    """Cancel ``job_id`` inside an open write transaction; its entry after, or None if unseen.

    ``lock``: read the row ``FOR UPDATE`` (PostgreSQL, where a claim may race).
    ``only_queued``: leave a PROCESSING job running (a synchronous caller who
    hung up: work already on a GPU is kept, work not yet started is dropped).
    """
    query = sa.select(jobs.c.seq, jobs.c.status, jobs.c.lease_token).where(
        jobs.c.id == db_text(job_id), visible_to(caller)
    )
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        return None
    if row.status not in TERMINAL and not (only_queued and row.status != QUEUED):
        transitions.cancel(conn, row.seq, now)
        if row.lease_token is not None:
            leases.end_leases(conn, [row.lease_token], leases.CANCELLED, now)
    entry = conn.execute(sa.select(*POLL_COLUMNS).where(jobs.c.seq == row.seq)).one()
    return poll_entry(entry)

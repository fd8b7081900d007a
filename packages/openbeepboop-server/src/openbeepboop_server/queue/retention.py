"""Retention: finished jobs are kept ``retention_days``, then purged in batches.

Deleting a job is the last arrow of the state machine (:func:`.transitions.purge`);
this module decides which jobs are past retention. Idempotency keys older than
the cutoff go too, once no finished job is left to delete: a key whose jobs
are gone is spent anyway (``submission.py``).

The jobs of a batch that has not ended (validating, in progress, cancelling,
finalising) are kept whatever their age: the batch's output and error files
are written from them when it ends, and its counts read them until then.
Once the batch has ended (its files written in the same transaction as the
move), retention applies to its jobs as to any job.
"""

from __future__ import annotations

import sqlalchemy as sa

from openbeepboop_server.db.tables import batches, idempotency_keys, jobs
from openbeepboop_server.queue import transitions
from openbeepboop_server.queue.batches import ACTIVE
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.statuses import TERMINAL_IN_SQL

#: Terminal jobs deleted per purge transaction.
PURGE_BATCH = 1_000
_DAY = 86_400.0


def retention_cutoff(policy: QueuePolicy, now: float) -> float:
    """Jobs finished before this time are past retention."""
    return now - policy.retention_days * _DAY


def purge_batch(conn: sa.Connection, cutoff: float, *, skip_locked: bool = False) -> int:
    """Delete up to :data:`PURGE_BATCH` terminal jobs finished before ``cutoff``; how many.

    When there is none left, deletes the idempotency keys created before ``cutoff``.
    ``skip_locked`` (PostgreSQL, where every replica purges): the rows are
    locked as they are picked and rows another replica is deleting are
    skipped, so two purges never wait on, or deadlock with, each other.

    Jobs of a batch that has not ended are skipped: the ids of the running
    batches are a few entries of ``ix_batches_status``, read once per
    statement, and the finished jobs are walked as before.
    """
    running = sa.select(batches.c.id).where(batches.c.status.in_(ACTIVE))
    query = (
        sa.select(jobs.c.seq)
        .where(
            jobs.c.status.in_(TERMINAL_IN_SQL),
            jobs.c.completed_at < cutoff,
            sa.or_(jobs.c.batch_id.is_(None), jobs.c.batch_id.not_in(running)),
        )
        .order_by(jobs.c.seq)
        .limit(PURGE_BATCH)
    )
    if skip_locked:
        query = query.with_for_update(skip_locked=True)
    seqs = list(conn.execute(query).scalars())
    if seqs:
        transitions.purge(conn, seqs)
    else:
        conn.execute(idempotency_keys.delete().where(idempotency_keys.c.created_at < cutoff))
    return len(seqs)

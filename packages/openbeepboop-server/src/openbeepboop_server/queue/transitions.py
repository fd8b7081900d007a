"""Every change of a job's status: the job's state machine, one function per arrow.

::

    insert_jobs (submission.py)
        │
        ▼          start
     QUEUED ───────────────────────► PROCESSING
        │   ◄───────────────────────     │
        │    requeue, expire_batch       ├─ complete ───────────► COMPLETED
        │                                ├─ fail, expire_batch ─► FAILED
        │                                └─ cancel ─────────────► CANCELLED
        ├─ cancel ──────────────────────────────────────────────► CANCELLED
        ├─ fail_unreadable ─────────────────────────────────────► FAILED
        └─ expire_unfinished (older than max_queued_days) ──────► FAILED

    COMPLETED, FAILED, CANCELLED ── purge (past retention) ──► deleted

Each arrow, who decides to take it, and what it does to the row:

* :func:`start` (``claiming.py``, a node's claim): QUEUED -> PROCESSING under a
  new lease; the attempt is counted here, at the claim.
* :func:`fail_unreadable` (``claiming.py``): QUEUED -> FAILED, a stored request
  this version can no longer read (it would fail every claim forever).
* :func:`complete` (``outcomes.py``, a result on the live lease):
  PROCESSING -> COMPLETED.
* :func:`requeue` (``outcomes.py``): PROCESSING -> QUEUED, after a retryable
  error while attempts are left (``not_before`` set by the policy's backoff), or
  a release (at once, the attempt given back).
* :func:`fail` (``outcomes.py``): PROCESSING -> FAILED, a permanent error, or a
  retryable one once ``max_attempts`` are used up.
* :func:`expire_batch` (housekeeping, through ``QueueService.expire_leases``):
  PROCESSING whose lease expired -> QUEUED at once while attempts are left,
  else FAILED with a ``lease_expired`` error.
  A job older than ``[queue] max_queued_days`` whose lease expired is not
  requeued: it ends FAILED with an ``expired`` error instead.
* :func:`expire_unfinished` (housekeeping, through
  ``QueueService.expire_unfinished``): QUEUED and older than ``[queue]
  max_queued_days`` -> FAILED with an ``expired`` error, oldest first.
* :func:`cancel` (``cancel.py``): QUEUED or PROCESSING -> CANCELLED; a node
  holding the lease learns it at its next heartbeat. :func:`cancel_many`
  (``batches.py``): the same for the live jobs of a batch cancelled or expired.
* :func:`purge` (``retention.py``): terminal jobs past retention are deleted
  with their lease history.

Every arrow into a final status also counts the jobs in their keys' usage
(:func:`.usage.record_endings`, same transaction). Nothing else writes
``jobs.status``. Leaving PROCESSING always clears the lease columns; the
lease's own history row (``leases.py``) records how it ended.
Statements are built once at import (building one per call costs more CPU
than running it: docs/performance.md, "Statements built once"); the callers
collect rows and each function writes them with one ``executemany``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa
from openbeepboop_schemas import JobStatus

from openbeepboop_server.db.driver_sql import DriverStatement
from openbeepboop_server.db.tables import jobs, leases
from openbeepboop_server.queue.leases import EXPIRED, end_leases
from openbeepboop_server.queue.usage import KeyTotals, add_totals, record_endings

#: Rows handled per expiry transaction, so the writer is never held long.
EXPIRY_BATCH = 500
#: ``error_type`` of a job failed because its last lease expired.
LEASE_EXPIRED_TYPE = "lease_expired"
#: ``error_type`` of a job that outlived ``[queue] max_queued_days`` unfinished.
EXPIRED_TYPE = "expired"
#: ``error_type`` of a job failed because its stored request can no longer be read.
UNREADABLE_TYPE = "invalid_request_error"

Rows = Sequence[dict[str, Any]]
#: Seconds in a day, for the settings counted in days.
DAY_SECONDS = 86_400.0


class ExpiredBatch(NamedTuple):
    """One step of the reaper: the jobs it took back, and whether to look again now."""

    job_ids: list[str]
    more: bool


_LEASE_OFF = {"lease_token": None, "lease_expires_at": None}
_BY_SEQ = jobs.c.seq == sa.bindparam("b_seq")

_START_SQL = (
    jobs.update()
    .where(_BY_SEQ)
    .values(
        status=JobStatus.PROCESSING.value,
        lease_token=sa.bindparam("b_token"),
        lease_node_id=sa.bindparam("b_node"),
        lease_key_id=sa.bindparam("b_key"),
        lease_expires_at=sa.bindparam("b_expires"),
        attempts=sa.bindparam("b_attempts"),
        started_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
    )
)
#: A claim's lease rows, read from the same parameters as ``_START_SQL``.
_RECORD_LEASES_SQL = leases.insert().values(
    token=sa.bindparam("b_token"),
    job_seq=sa.bindparam("b_seq"),
    node_id=sa.bindparam("b_node"),
    key_id=sa.bindparam("b_key"),
    attempt=sa.bindparam("b_attempts"),
    claimed_at=sa.bindparam("b_now"),
)
#: Both as one statement, for PostgreSQL (which runs an UPDATE inside a
#: WITH): a claim's round trips are its latency.
_START_AND_RECORD = DriverStatement(_RECORD_LEASES_SQL.add_cte(_START_SQL.cte("started")))
#: The claim's and the delivery's statements run on the driver's cursor (db/driver_sql.py).
_START = DriverStatement(_START_SQL)
_RECORD_LEASES = DriverStatement(_RECORD_LEASES_SQL)
_COMPLETE_SQL = (
    jobs.update()
    .where(_BY_SEQ)
    .values(
        status=JobStatus.COMPLETED.value,
        result=sa.bindparam("b_result"),
        error_message=None,
        error_type=None,
        completed_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
        **_LEASE_OFF,
    )
)
_COMPLETE = DriverStatement(_COMPLETE_SQL)
_FAIL = (
    jobs.update()
    .where(_BY_SEQ)
    .values(
        status=JobStatus.FAILED.value,
        error_message=sa.bindparam("b_message"),
        error_type=sa.bindparam("b_type"),
        completed_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
        **_LEASE_OFF,
    )
)
_FAIL_UNREADABLE = _FAIL.where(
    jobs.c.status == JobStatus.PROCESSING.value, jobs.c.lease_token == sa.bindparam("b_token")
)
_REQUEUE = (
    jobs.update()
    .where(_BY_SEQ)
    .values(
        status=JobStatus.QUEUED.value,
        attempts=sa.bindparam("b_attempts"),
        not_before=sa.bindparam("b_not_before"),
        # The node's last error stays visible while the job waits for its retry.
        error_message=sa.bindparam("b_message"),
        error_type=sa.bindparam("b_type"),
        updated_at=sa.bindparam("b_now"),
        **_LEASE_OFF,
    )
)
_EXPIRED = (
    sa.select(
        jobs.c.seq,
        jobs.c.id,
        jobs.c.attempts,
        jobs.c.max_attempts,
        jobs.c.lease_token,
        jobs.c.lease_node_id,
        jobs.c.created_at,
    )
    .where(
        jobs.c.status == JobStatus.PROCESSING.value,
        jobs.c.lease_expires_at < sa.bindparam("now"),
    )
    .order_by(jobs.c.lease_expires_at)
    .limit(EXPIRY_BATCH)
)
#: PostgreSQL replicas reap concurrently: each skips the rows another is taking.
_EXPIRED_SKIP_LOCKED = _EXPIRED.with_for_update(skip_locked=True)
_REQUEUE_EXPIRED = (
    jobs.update()
    .where(_BY_SEQ)
    .values(
        status=JobStatus.QUEUED.value,
        not_before=0.0,
        updated_at=sa.bindparam("b_now"),
        **_LEASE_OFF,
    )
)
#: The oldest QUEUED jobs, in queue order (``ix_jobs_status_seq``).
_QUEUE_HEAD = (
    sa.select(jobs.c.seq, jobs.c.id, jobs.c.created_at)
    .where(jobs.c.status == sa.bindparam("status"))
    .order_by(jobs.c.seq)
    .limit(EXPIRY_BATCH)
)
_QUEUE_HEAD_SKIP_LOCKED = _QUEUE_HEAD.with_for_update(skip_locked=True)
_CANCEL = (
    jobs.update()
    .where(_BY_SEQ)
    .values(
        status=JobStatus.CANCELLED.value,
        completed_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
        **_LEASE_OFF,
    )
)
_PURGE_LEASES = leases.delete().where(leases.c.job_seq.in_(sa.bindparam("seqs", expanding=True)))
_PURGE_JOBS = jobs.delete().where(jobs.c.seq.in_(sa.bindparam("seqs", expanding=True)))


def start(conn: sa.Connection, rows: Rows) -> None:
    """QUEUED -> PROCESSING: put claimed jobs under their new leases and record the leases.

    ``rows``: ``b_seq``, ``b_token``, ``b_node``, ``b_key``, ``b_expires``,
    ``b_attempts`` (the attempt this claim starts), ``b_now``; each also
    becomes the job's row in the ``leases`` table.
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _START_AND_RECORD.execute(conn, rows)
        return
    _START.execute(conn, rows)
    _RECORD_LEASES.execute(conn, rows)


def fail_unreadable(conn: sa.Connection, rows: Rows) -> None:
    """PROCESSING -> FAILED: requests no node can run, found after the claim committed.

    ``rows``: ``b_seq``, ``b_token`` (the lease just taken: a job cancelled in
    between stays cancelled), ``b_message``, ``b_type`` (:data:`UNREADABLE_TYPE`),
    ``b_now``.
    """
    if rows:
        conn.execute(_FAIL_UNREADABLE, rows)
        record_endings(conn, [row["b_seq"] for row in rows], now=rows[0]["b_now"])


def complete(conn: sa.Connection, rows: Rows, usage: Mapping[int, KeyTotals] | None) -> None:
    """PROCESSING -> COMPLETED, delivered by a node.

    ``rows``: ``b_seq``, ``b_result`` (JSON), ``b_now``; ``usage``: what the
    jobs ended here (and by :func:`fail` in the same delivery) add to their
    keys' usage, by key id, as the delivery counted it; ``None``: read it
    from the rows.
    """
    if rows:
        _COMPLETE.execute(conn, rows)
        _count(conn, rows, usage)


def fail(conn: sa.Connection, rows: Rows, usage: Mapping[int, KeyTotals] | None) -> None:
    """PROCESSING -> FAILED, delivered by a node.

    ``rows``: ``b_seq``, ``b_message``, ``b_type``, ``b_now``; ``usage`` as for
    :func:`complete` (an empty mapping: counted there).
    """
    if rows:
        conn.execute(_FAIL, rows)
        _count(conn, rows, usage)


def _count(conn: sa.Connection, rows: Rows, usage: Mapping[int, KeyTotals] | None) -> None:
    now = rows[0]["b_now"]
    if usage is None:
        record_endings(conn, [row["b_seq"] for row in rows], now=now, timed=True)
    else:
        add_totals(conn, now, usage)


def requeue(conn: sa.Connection, rows: Rows) -> None:
    """PROCESSING -> QUEUED.

    ``rows``: ``b_seq``, ``b_attempts`` (attempts counted so far),
    ``b_not_before`` (0 for at once), ``b_message`` and ``b_type`` (the error
    shown while the job waits, or None), ``b_now``.
    """
    if rows:
        conn.execute(_REQUEUE, rows)


def expired_message(max_queued_days: float) -> str:
    """The error a job that outlived ``max_queued_days`` unfinished ends with."""
    return (
        f"the job was not finished within the server's maximum age of {max_queued_days:g} "
        "day(s) ([queue] max_queued_days); no node took it to the end in time"
    )


def expire_batch(
    conn: sa.Connection,
    *,
    now: float,
    skip_locked: bool,
    max_queued_days: float | None = None,
    spare: frozenset[str] = frozenset(),
) -> ExpiredBatch:
    """PROCESSING past its lease -> QUEUED, or FAILED once attempts are used up.

    Looks at up to :data:`EXPIRY_BATCH` expired leases and takes back those
    whose token is not in ``spare`` (a heartbeat or a result for them has
    arrived and waits for the writer: :mod:`.lease_arrivals`). The attempt
    was counted when the job was claimed, so a job whose attempts are used up
    fails here with a ``lease_expired`` error; a job older than
    ``max_queued_days`` fails with an ``expired`` one; the rest requeue at once.
    """
    found = conn.execute(_EXPIRED_SKIP_LOCKED if skip_locked else _EXPIRED, {"now": now}).all()
    rows = [row for row in found if row.lease_token not in spare]
    # A full batch may have more behind it; one wholly spared would only come back.
    more = len(found) == EXPIRY_BATCH and bool(rows)
    if not rows:
        return ExpiredBatch([], more)
    too_old = -1.0 if max_queued_days is None else now - max_queued_days * DAY_SECONDS
    requeued = [
        {"b_seq": row.seq, "b_now": now}
        for row in rows
        if row.attempts < row.max_attempts and row.created_at >= too_old
    ]
    failed = [
        {
            "b_seq": row.seq,
            "b_message": (
                f"the lease expired {row.attempts} time(s) (node {row.lease_node_id!s} stopped "
                f"heartbeating); giving up after {row.max_attempts} attempt(s)"
            ),
            "b_type": LEASE_EXPIRED_TYPE,
            "b_now": now,
        }
        for row in rows
        if row.attempts >= row.max_attempts and row.created_at >= too_old
    ]
    if max_queued_days is not None:
        failed.extend(
            {
                "b_seq": row.seq,
                "b_message": expired_message(max_queued_days),
                "b_type": EXPIRED_TYPE,
                "b_now": now,
            }
            for row in rows
            if row.created_at < too_old
        )
    if requeued:
        conn.execute(_REQUEUE_EXPIRED, requeued)
    if failed:
        conn.execute(_FAIL, failed)
        record_endings(conn, [row["b_seq"] for row in failed], now=now)
    end_leases(conn, [row.lease_token for row in rows if row.lease_token], EXPIRED, now)
    return ExpiredBatch([row.id for row in rows], more)


def expire_unfinished(
    conn: sa.Connection, *, now: float, max_queued_days: float, skip_locked: bool
) -> list[str]:
    """QUEUED and created more than ``max_queued_days`` ago -> FAILED (``expired``).

    Looks at the head of the queue only (up to :data:`EXPIRY_BATCH` QUEUED
    jobs in queue order, oldest first) and fails the leading ones that are
    too old, so a sweep costs one short index walk however long the queue
    is; returns the affected job ids (a full batch: call again). Jobs still
    PROCESSING are left to :func:`expire_batch`: a live lease may yet finish.
    """
    cutoff = now - max_queued_days * DAY_SECONDS
    head = conn.execute(
        _QUEUE_HEAD_SKIP_LOCKED if skip_locked else _QUEUE_HEAD, {"status": JobStatus.QUEUED.value}
    ).all()
    old = list(itertools.takewhile(lambda row: row.created_at < cutoff, head))
    if old:
        message = expired_message(max_queued_days)
        conn.execute(
            _FAIL,
            [
                {"b_seq": row.seq, "b_message": message, "b_type": EXPIRED_TYPE, "b_now": now}
                for row in old
            ],
        )
        record_endings(conn, [row.seq for row in old], now=now)
    return [row.id for row in old]


def cancel(conn: sa.Connection, seq: int, now: float) -> None:
    """QUEUED or PROCESSING -> CANCELLED (the caller has checked the job is not terminal)."""
    conn.execute(_CANCEL, {"b_seq": seq, "b_now": now})
    record_endings(conn, [seq], now=now)


def cancel_many(conn: sa.Connection, seqs: Sequence[int], now: float) -> None:
    """QUEUED or PROCESSING -> CANCELLED for many jobs (a batch cancelled or expired).

    The caller has read the jobs as live in the same transaction and ends
    their held leases itself.
    """
    if seqs:
        conn.execute(_CANCEL, [{"b_seq": seq, "b_now": now} for seq in seqs])
        record_endings(conn, seqs, now=now)


def purge(conn: sa.Connection, seqs: list[int]) -> None:
    """Terminal -> deleted: the jobs ``seqs`` and their lease history."""
    conn.execute(_PURGE_LEASES, {"seqs": seqs})
    conn.execute(_PURGE_JOBS, {"seqs": seqs})

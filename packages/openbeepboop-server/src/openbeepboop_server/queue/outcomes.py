"""Delivering outcomes: results, errors and releases for held leases.

Per outcome, in order:

* the token was never issued for this job, or not to this caller -> ``rejected``;
* this lease already delivered an outcome -> ``duplicate``;
* the lease is no longer the job's live lease (expired, cancelled, job
  terminal) -> ``stale``;
* otherwise it is applied -> ``accepted``: a result completes the job; a
  permanent error fails it; a retryable error requeues it with backoff, or
  fails it once attempts are used up; a release requeues it at once and gives
  the attempt back.

Nothing but ``accepted`` changes the database. The whole request is one
transaction; rows are written with one ``executemany`` per kind of change.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from openbeepboop_schemas import (
    ErrorOutcome,
    JobStatus,
    ReleaseOutcome,
    ResultOutcome,
    SubmitAck,
    SubmitRequest,
    SubmitResponse,
)

from openbeepboop_server.db.tables import jobs, leases
from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import leases as lease_outcomes
from openbeepboop_server.queue.leases import LeaseState, load_leases
from openbeepboop_server.queue.policy import QueuePolicy

_LEASE_OFF = {"lease_token": None, "lease_expires_at": None}

_complete = (
    jobs.update()
    .where(jobs.c.seq == sa.bindparam("b_seq"))
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
_fail = (
    jobs.update()
    .where(jobs.c.seq == sa.bindparam("b_seq"))
    .values(
        status=JobStatus.FAILED.value,
        error_message=sa.bindparam("b_message"),
        error_type=sa.bindparam("b_type"),
        completed_at=sa.bindparam("b_now"),
        updated_at=sa.bindparam("b_now"),
        **_LEASE_OFF,
    )
)
_requeue = (
    jobs.update()
    .where(jobs.c.seq == sa.bindparam("b_seq"))
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
_end_lease = (
    leases.update()
    .where(leases.c.id == sa.bindparam("b_id"))
    .values(outcome=sa.bindparam("b_outcome"), ended_at=sa.bindparam("b_now"))
)


class _Changes:
    """Row changes collected while walking the outcomes, written at the end."""

    def __init__(self) -> None:
        self.complete: list[dict[str, Any]] = []
        self.fail: list[dict[str, Any]] = []
        self.requeue: list[dict[str, Any]] = []
        self.ended: list[dict[str, Any]] = []

    def write(self, conn: sa.Connection) -> None:
        for statement, rows in (
            (_complete, self.complete),
            (_fail, self.fail),
            (_requeue, self.requeue),
            (_end_lease, self.ended),
        ):
            if rows:
                conn.execute(statement, rows)


def deliver(
    conn: sa.Connection,
    caller: Caller,
    submit: SubmitRequest,
    *,
    now: float,
    policy: QueuePolicy,
    lock: bool,
    rng: Callable[[], float] = random.random,
) -> SubmitResponse:
    """Apply each outcome of ``submit`` that is valid; one ack per outcome, in order."""
    states = load_leases(conn, (outcome.lease_token for outcome in submit.outcomes), lock=lock)
    changes = _Changes()
    acks: list[SubmitAck] = []
    for outcome in submit.outcomes:
        state = states.get(outcome.lease_token)
        if state is None or state.job.job_id != outcome.job_id or not state.held_by(caller):
            acks.append(SubmitAck(job_id=outcome.job_id, ack="rejected"))
            continue
        if state.outcome in lease_outcomes.DELIVERED:
            ack = "duplicate"
        elif not state.is_current:
            ack = "stale"
        else:
            ack = "accepted"
            _apply(state, outcome, changes, now=now, policy=policy, rng=rng)
        acks.append(SubmitAck(job_id=outcome.job_id, ack=ack, status=state.job.status))
    changes.write(conn)
    return SubmitResponse(acks=acks)


def _apply(
    state: LeaseState,
    outcome: ResultOutcome | ErrorOutcome | ReleaseOutcome,
    changes: _Changes,
    *,
    now: float,
    policy: QueuePolicy,
    rng: Callable[[], float],
) -> None:
    job = state.job
    if isinstance(outcome, ResultOutcome):
        changes.complete.append(
            {
                "b_seq": job.seq,
                "b_result": outcome.result.model_dump_json(exclude_unset=True),
                "b_now": now,
            }
        )
        job.status, state.outcome = JobStatus.COMPLETED.value, lease_outcomes.COMPLETED
    elif isinstance(outcome, ReleaseOutcome):
        job.attempts = max(job.attempts - 1, 0)
        changes.requeue.append(
            {
                "b_seq": job.seq,
                "b_attempts": job.attempts,
                "b_not_before": 0.0,
                "b_message": None,
                "b_type": None,
                "b_now": now,
            }
        )
        job.status, state.outcome = JobStatus.QUEUED.value, lease_outcomes.RELEASED
    elif outcome.error.retryable and job.attempts < job.max_attempts:
        delay = policy.retry_delay(job.attempts, rng)
        changes.requeue.append(
            {
                "b_seq": job.seq,
                "b_attempts": job.attempts,
                "b_not_before": now + delay,
                "b_message": db_text(outcome.error.message),
                "b_type": db_text(outcome.error.type),
                "b_now": now,
            }
        )
        job.status, state.outcome = JobStatus.QUEUED.value, lease_outcomes.RETRIED
    else:
        changes.fail.append(
            {
                "b_seq": job.seq,
                "b_message": db_text(outcome.error.message),
                "b_type": db_text(outcome.error.type),
                "b_now": now,
            }
        )
        job.status, state.outcome = JobStatus.FAILED.value, lease_outcomes.FAILED
    job.lease_token = None
    changes.ended.append({"b_id": state.lease_id, "b_outcome": state.outcome, "b_now": now})

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
transaction; rows are written with one ``executemany`` per kind of change,
the job rows through :mod:`.transitions` (complete, fail, requeue).
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

from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import leases as lease_outcomes
from openbeepboop_server.queue import transitions
from openbeepboop_server.queue.leases import LeaseState, load_leases
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.usage import KeyTotals, bounded


class _Changes:
    """Row changes collected while walking the outcomes, written at the end."""

    def __init__(self) -> None:
        self.complete: list[dict[str, Any]] = []
        #: What the jobs ended here add to their keys' usage, by key id.
        self.usage: dict[int, KeyTotals] = {}
        self.fail: list[dict[str, Any]] = []
        self.requeue: list[dict[str, Any]] = []
        self.ended: list[dict[str, Any]] = []

    def write(self, conn: sa.Connection) -> None:
        if self.complete:
            transitions.complete(conn, self.complete, self.usage)
            transitions.fail(conn, self.fail, {})  # counted with the completions
        else:
            transitions.fail(conn, self.fail, self.usage)
        transitions.requeue(conn, self.requeue)
        lease_outcomes.end_leases_by_id(conn, self.ended)


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
        totals = _totals(changes, state, now)
        totals.completed += 1
        usage = outcome.result.usage
        if usage is not None:
            totals.prompt_tokens += bounded(usage.prompt_tokens)
            totals.completion_tokens += bounded(usage.completion_tokens)
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
        _totals(changes, state, now).failed += 1
        job.status, state.outcome = JobStatus.FAILED.value, lease_outcomes.FAILED
    job.lease_token = None
    changes.ended.append({"b_id": state.lease_id, "b_outcome": state.outcome, "b_now": now})


def _totals(changes: _Changes, state: LeaseState, now: float) -> KeyTotals:
    """The usage of the job's key in this delivery, with this lease's LLM time added."""
    totals = changes.usage.setdefault(state.job.owner_key_id, KeyTotals())
    totals.llm_seconds += max(0.0, now - state.claimed_at)
    return totals

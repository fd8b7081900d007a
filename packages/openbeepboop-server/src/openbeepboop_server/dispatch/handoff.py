"""Which node gets a new job: a single submit hands it straight to a parked fetch.

When a node's long-poll is parked (asleep, nothing of its own in flight) and
serves the new job's model, the submit reserves the fetch that has waited
longest, claims for it in the submit's own transaction, and passes the
leases over (docs/server-internals.md, "Hand-off: a submit claims for a parked
node"). Without a parked node it is a plain submit plus a wake-up. Leases a
node will never see are given back to the queue at once.
"""

from __future__ import annotations

import functools

from openbeepboop_schemas import (
    ChatCompletionRequest,
    Job,
    Lease,
    Outcome,
    ReleaseOutcome,
    SubmitRequest,
)

from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.dispatch.calls import run_service, weight
from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.keys import Caller


async def submit_handing_off(
    context: DispatchContext,
    caller: Caller,
    request: ChatCompletionRequest,
    idempotency_key: str | None,
    body_bytes: int = 0,
    *,
    request_hash: str | None = None,
) -> Job:
    """Queue one job; if a node is parked in a long-poll for its model, claim it for that node.

    ``body_bytes`` (the request's size) decides whether the write may run on
    the event loop (:func:`~openbeepboop_server.dispatch.calls.weight`).

    The claim runs in the submit's own transaction and the leases go straight
    to the waiting fetch (see :mod:`openbeepboop_server.dispatch.wakeups`), so
    an idle node holds the job one transaction and one loop turn sooner.
    Without a parked node it is a plain submit plus a wake-up.
    """
    queue, wakeups = context.queue, context.wakeups
    items = weight(1, body_bytes)
    waiter = wakeups.reserve(db_text(request.model))
    if waiter is None:
        submit = functools.partial(queue.submit, request_hash=request_hash)
        job = await run_service(context.db, items, submit, caller, request, idempotency_key)
        wakeups.jobs_available([job.model])
        return job
    node_caller, fetch = waiter.claimant
    leases: list[Lease] = []
    try:
        job, leases = await run_service(
            context.db,
            items,
            functools.partial(queue.submit_and_claim, request_hash=request_hash),
            caller,
            request,
            idempotency_key,
            node_caller,
            fetch,
        )
    finally:
        handed = waiter.hand(leases)
    # Once the waiter has the leases its answer is on the way, ahead of this
    # 202: the lease is on the job's critical path, the 202 only starts a wait.
    if handed and leases and not await waiter.taken():
        handed = False
    if leases and not handed:
        await give_back(context, node_caller, fetch.node_id, leases)
    elif all(lease.job_id != job.id for lease in leases):
        # Not claimed (an idempotent replay, or older claimable jobs came first).
        wakeups.jobs_available([job.model])
    return job


async def give_back(
    context: DispatchContext, caller: Caller, node_id: str, leases: list[Lease]
) -> None:
    """Release leases whose node will never see them: requeued at once, no attempt counted."""
    outcomes: list[Outcome] = [
        ReleaseOutcome(job_id=lease.job_id, lease_token=lease.lease_token) for lease in leases
    ]
    release = SubmitRequest(node_id=node_id, outcomes=outcomes)
    await run_service(context.db, len(leases), context.queue.deliver, caller, release)
    context.wakeups.jobs_available([lease.model for lease in leases])

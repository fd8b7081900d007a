"""What a node's delivery of outcomes wakes, and what it hands to the polls waiting on them.

The delivery's own transaction also reads the poll entries of the jobs some
poll is waiting on, if they are now terminal, and hands each to the waiting
polls whose key may see it: such a poll answers without a read of its own.
Finished jobs wake the polls watching them; requeued ones wake the fetches.
Then the loop turns once before the node is answered, so the user's answer
is written first (docs/server-internals.md, "Hand-off: a submit claims for
a parked node", the delivery's side).
"""

from __future__ import annotations

import asyncio

from openbeepboop_schemas import SubmitRequest, SubmitResponse

from openbeepboop_server.dispatch.calls import run_service, weight
from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.statuses import QUEUED, TERMINAL


async def deliver_outcomes(
    context: DispatchContext, caller: Caller, submit: SubmitRequest, body_bytes: int = 0
) -> SubmitResponse:
    """Record ``submit``'s outcomes, count them, and wake whoever waits on their jobs.

    ``body_bytes`` (the delivery's size) keeps a large result's write off the event loop.
    """
    wakeups = context.wakeups
    # Polls waiting on these jobs get their entries from this transaction.
    watched = wakeups.watched(outcome.job_id for outcome in submit.outcomes)
    answer, finished_entries = await run_service(
        context.db,
        weight(len(submit.outcomes), body_bytes),
        context.queue.deliver_and_read,
        caller,
        submit,
        watched,
    )
    for owner_key_id, entry in finished_entries:
        wakeups.hand_result(owner_key_id, entry)
    finished: list[str] = []
    requeued = False
    for outcome, ack in zip(submit.outcomes, answer.acks, strict=False):
        context.metrics.outcomes.labels(outcome.kind, ack.ack).inc()
        if ack.ack != "accepted":
            continue
        if ack.status in TERMINAL:
            finished.append(ack.job_id)
        elif ack.status == QUEUED:
            requeued = True
    if finished:
        wakeups.jobs_changed(finished)
    if requeued:
        wakeups.queue_changed()
    if finished_entries:
        # A user waits on the polls just handed their entries; the node's ack
        # can wait one turn of the loop (its result is committed either way).
        await asyncio.sleep(0)
    return answer

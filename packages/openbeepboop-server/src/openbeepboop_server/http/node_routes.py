"""Endpoints for NODE (and ADMIN) keys: fetch leases, deliver outcomes, heartbeat."""

from __future__ import annotations

import asyncio

from openbeepboop_schemas import (
    MAX_WAIT_SECONDS,
    FetchRequest,
    HeartbeatRequest,
    Lease,
    SubmitRequest,
)
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openbeepboop_server.http.bodies import list_response, model_response
from openbeepboop_server.http.endpoints import NODES, Call, Endpoint, array_of, component
from openbeepboop_server.http.longpoll import fetch_leases
from openbeepboop_server.http.service_calls import run_service

_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})


async def fetch(call: Call) -> Response:
    """Claim up to ``max_jobs`` jobs, long-polling up to ``wait``."""
    request = call.body_as(FetchRequest)
    leases = await fetch_leases(call.context, call.request, call.user, request)
    if leases:
        call.context.metrics.claimed.inc(len(leases))
    # The request a node runs is sent back exactly as the user submitted it.
    return list_response(leases, Lease, exclude_unset=True)


async def deliver(call: Call) -> Response:
    """Record results, errors and releases for held leases."""
    submit = call.body_as(SubmitRequest)
    context = call.context
    # Polls waiting on these jobs get their entries from this transaction.
    watched = context.wakeups.watched(outcome.job_id for outcome in submit.outcomes)
    answer, finished_entries = await run_service(
        context.db, len(submit.outcomes), context.queue.deliver_and_read, call.user, submit, watched
    )
    for owner_key_id, entry in finished_entries:
        context.wakeups.hand_result(owner_key_id, entry)
    finished: list[str] = []
    requeued = False
    for outcome, ack in zip(submit.outcomes, answer.acks, strict=False):
        context.metrics.outcomes.labels(outcome.kind, ack.ack).inc()
        if ack.ack != "accepted":
            continue
        if ack.status in _TERMINAL:
            finished.append(ack.job_id)
        elif ack.status == "QUEUED":
            requeued = True
    if finished:
        context.wakeups.jobs_changed(finished)
    if requeued:
        context.wakeups.queue_changed()
    if finished_entries:
        # A user waits on the polls just handed their entries; the node's ack
        # can wait one turn of the loop (its result is committed either way).
        await asyncio.sleep(0)
    return model_response(answer)


async def heartbeat(call: Call) -> Response:
    """Extend held leases; say which were lost or cancelled."""
    beat = call.body_as(HeartbeatRequest)
    answer = await run_in_threadpool(call.context.queue.heartbeat, call.user, beat)
    return model_response(answer)


ENDPOINTS = (
    Endpoint(
        "POST",
        "/internal/queue/fetch",
        "fetchJobs",
        "Claim jobs for the declared models, long-polling",
        fetch,
        NODES,
        body=FetchRequest,
        response=array_of("Lease"),
        tag="queue",
        description=(
            "Claims up to `max_jobs` queued jobs whose model is in `models` (`*` = any) "
            f"and answers their leases; waits up to `wait` (at most {MAX_WAIT_SECONDS:g} s) "
            "for jobs to appear; `[]` when none did."
        ),
    ),
    Endpoint(
        "POST",
        "/internal/queue/submit",
        "deliverOutcomes",
        "Deliver results, errors or releases for held leases",
        deliver,
        NODES,
        body=SubmitRequest,
        response=component("SubmitResponse"),
        tag="queue",
        description="One ack per outcome, in order: accepted, duplicate, stale or rejected.",
    ),
    Endpoint(
        "POST",
        "/internal/queue/heartbeat",
        "heartbeat",
        "Extend held leases",
        heartbeat,
        NODES,
        body=HeartbeatRequest,
        response=component("HeartbeatResponse"),
        tag="queue",
        description="Lists which leases were extended, lost or cancelled.",
    ),
)

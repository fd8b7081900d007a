"""Endpoints for NODE (and ADMIN) keys: fetch leases, deliver outcomes, heartbeat, watch."""

from __future__ import annotations

from functools import partial

from openbeepboop_schemas import (
    FETCH_PATH,
    HEARTBEAT_PATH,
    LEASE_WATCH_PATH,
    MAX_WAIT_SECONDS,
    QUEUE_SUBMIT_PATH,
    FetchRequest,
    HeartbeatRequest,
    Lease,
    LeaseWatchRequest,
    SubmitRequest,
)
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from openbeepboop_server.dispatch.delivery import deliver_outcomes
from openbeepboop_server.dispatch.lease_watch import watch_leases
from openbeepboop_server.dispatch.waiting import fetch_leases
from openbeepboop_server.http.bodies import list_response, model_response
from openbeepboop_server.http.disconnect import disconnect_watch
from openbeepboop_server.http.endpoints import NODES, Call, Endpoint, array_of, component


async def fetch(call: Call) -> Response:
    """Claim up to ``max_jobs`` jobs, long-polling up to ``wait``."""
    request = call.body_as(FetchRequest)
    leases = await fetch_leases(
        call.context, call.user, request, partial(disconnect_watch, call.request)
    )
    if leases:
        call.context.metrics.claimed.inc(len(leases))
    # The request a node runs is sent back exactly as the user submitted it.
    return list_response(leases, Lease, exclude_unset=True)


async def deliver(call: Call) -> Response:
    """Record results, errors and releases for held leases."""
    submit = call.body_as(SubmitRequest)
    body_bytes = len(await call.request.body())
    answer = await deliver_outcomes(call.context, call.user, submit, body_bytes)
    return model_response(answer)


async def heartbeat(call: Call) -> Response:
    """Extend held leases; say which were lost or cancelled."""
    beat = call.body_as(HeartbeatRequest)
    answer = await run_in_threadpool(call.context.queue.heartbeat, call.user, beat)
    return model_response(answer)


async def watch(call: Call) -> Response:
    """Say which held leases were cancelled or lost, long-polling until one is."""
    request = call.body_as(LeaseWatchRequest)
    answer = await watch_leases(
        call.context, call.user, request, partial(disconnect_watch, call.request)
    )
    return model_response(answer)


ENDPOINTS = (
    Endpoint(
        "POST",
        FETCH_PATH,
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
        QUEUE_SUBMIT_PATH,
        "deliverOutcomes",
        "Deliver results, errors or releases for held leases",
        deliver,
        NODES,
        body=SubmitRequest,
        response=component("SubmitResponse"),
        tag="queue",
        # Results come from the operator's own nodes and are bounded by
        # [limits] max_result_bytes; refusing a paid result for its shape (a
        # completion with logprobs holds many values) would lose it.
        budgeted=False,
        description="One ack per outcome, in order: accepted, duplicate, stale or rejected.",
    ),
    Endpoint(
        "POST",
        HEARTBEAT_PATH,
        "heartbeat",
        "Extend held leases",
        heartbeat,
        NODES,
        body=HeartbeatRequest,
        response=component("HeartbeatResponse"),
        tag="queue",
        description="Lists which leases were extended, lost or cancelled.",
    ),
    Endpoint(
        "POST",
        LEASE_WATCH_PATH,
        "watchLeases",
        "Wait until a held lease is cancelled or lost",
        watch,
        NODES,
        body=LeaseWatchRequest,
        response=component("LeaseWatchResponse"),
        tag="queue",
        description=(
            "Answers as soon as one of `leases` is cancelled or lost (a lease the caller "
            f"never held is lost at once), or after `wait` (at most {MAX_WAIT_SECONDS:g} s) "
            "with both lists empty. Extends nothing: the heartbeat does that."
        ),
    ),
)

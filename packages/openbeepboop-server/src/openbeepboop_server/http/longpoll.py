"""The two long-polls: a node waiting for jobs, a client waiting for results.

Also the submit that hands its job straight to a parked node
(:func:`submit_handing_off`), since it is the other half of the fetch's
protocol with its waiter.

Both follow one pattern. Register a waiter, then read the database; if there
is nothing to answer yet, sleep until a wake-up, the next periodic re-check
(changes made by another replica) or the deadline, and read again. No
database transaction is open while sleeping, and the sleep is a plain
``asyncio.Event`` wait: no thread is held and nothing spins.

A client that hangs up is noticed at once (its ``http.disconnect`` message
sets the waiter), and a fetch whose node has gone claims nothing more: the
jobs stay queued for someone who is listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from openbeepboop_schemas import (
    TERMINAL_STATUSES,
    ChatCompletionRequest,
    FetchRequest,
    Job,
    Lease,
    Outcome,
    PollEntry,
    ReleaseOutcome,
    SubmitRequest,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from openbeepboop_server.db.safe_text import db_text
from openbeepboop_server.http.context import ServerContext
from openbeepboop_server.http.service_calls import run_service
from openbeepboop_server.keys import Caller
from openbeepboop_server.wakeups import Waiter

_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
#: Disconnect listeners cancelled but not yet finished (the loop only holds weak references).
_ending_listeners: set[asyncio.Task[None]] = set()
_LIVE = frozenset({"QUEUED", "PROCESSING"})


@contextlib.asynccontextmanager
async def disconnect_watch(request: Request, waiter: Waiter) -> AsyncIterator[None]:
    """While the block runs, a client disconnect marks ``waiter`` as disconnected.

    Only use after the body has been read: from then on the only message the
    server can deliver is ``http.disconnect``.
    """

    async def listen() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                waiter.disconnect()
                return

    task = asyncio.ensure_future(listen())
    try:
        yield
    finally:
        # Not awaited: the answer goes out in this turn of the loop, and the
        # listener finishes its cancellation in the next (kept referenced until then).
        task.cancel()
        _ending_listeners.add(task)
        task.add_done_callback(_listener_ended)


def _listener_ended(task: asyncio.Task[None]) -> None:
    _ending_listeners.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a receive that failed has nothing left to tell


def _sleep_for(deadline: float, recheck: float, wake_at: float | None = None) -> float:
    timeout = min(deadline - time.monotonic(), recheck)
    if wake_at is not None:
        timeout = min(timeout, max(0.0, wake_at - time.time()))
    return max(0.0, timeout)


async def fetch_leases(
    context: ServerContext, request: Request, caller: Caller, fetch: FetchRequest
) -> list[Lease]:
    """Claim jobs for ``fetch``, waiting up to its ``wait`` (capped by config) for some."""
    queue = context.queue
    wait = min(fetch.wait, context.settings.server.max_wait_seconds)
    if wait <= 0:
        return await run_service(context.db, fetch.max_jobs, queue.claim, caller, fetch)
    deadline = time.monotonic() + wait
    with context.wakeups.fetching(fetch.models, (caller, fetch)) as waiter:
        async with disconnect_watch(request, waiter):
            while True:
                waiter.clear()
                leases = await run_service(context.db, fetch.max_jobs, queue.claim, caller, fetch)
                if leases or waiter.done or time.monotonic() >= deadline:
                    return leases
                wake_at = await run_in_threadpool(queue.next_claimable_at, fetch.models)
                waiter.parked = True
                try:
                    await waiter.wait(_sleep_for(deadline, context.recheck_seconds, wake_at))
                finally:
                    waiter.parked = False
                if waiter.reserved:
                    leases = await waiter.handed()
                    if leases and waiter.disconnected:
                        await give_back(context, caller, fetch.node_id, leases)
                        return []
                    if leases:
                        return leases
                if waiter.done:
                    # The node hung up or the server is stopping: claiming now
                    # would only strand the jobs until their leases expire.
                    return []


async def submit_handing_off(
    context: ServerContext,
    caller: Caller,
    request: ChatCompletionRequest,
    idempotency_key: str | None,
) -> Job:
    """Queue one job; if a node is parked in a long-poll for its model, claim it for that node.

    The claim runs in the submit's own transaction and the leases go straight
    to the waiting fetch (see :mod:`openbeepboop_server.wakeups`), so an idle
    node holds the job one transaction and one loop turn sooner. Without a
    parked node it is a plain submit plus a wake-up.
    """
    queue, wakeups = context.queue, context.wakeups
    waiter = wakeups.reserve(db_text(request.model))
    if waiter is None:
        job = await run_service(context.db, 1, queue.submit, caller, request, idempotency_key)
        wakeups.jobs_available([job.model])
        return job
    node_caller, fetch = waiter.claimant
    leases: list[Lease] = []
    try:
        job, leases = await run_service(
            context.db,
            1,
            queue.submit_and_claim,
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
    context: ServerContext, caller: Caller, node_id: str, leases: list[Lease]
) -> None:
    """Release leases whose node will never see them: requeued at once, no attempt counted."""
    outcomes: list[Outcome] = [
        ReleaseOutcome(job_id=lease.job_id, lease_token=lease.lease_token) for lease in leases
    ]
    release = SubmitRequest(node_id=node_id, outcomes=outcomes)
    await run_service(context.db, len(leases), context.queue.deliver, caller, release)
    context.wakeups.jobs_available([lease.model for lease in leases])


async def poll_entries(
    context: ServerContext,
    request: Request,
    caller: Caller,
    ids: list[str],
    wait: float | None,
) -> list[PollEntry]:
    """Poll ``ids``; with ``wait``, hold the answer until one live job becomes terminal."""
    queue = context.queue
    wait = min(wait or 0.0, context.settings.server.max_wait_seconds)
    if wait <= 0:
        return await run_service(context.db, len(ids), queue.poll, caller, ids)
    deadline = time.monotonic() + wait
    with context.wakeups.watching(ids, caller) as waiter:
        entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
        live = {entry.id for entry in entries if entry.status in _LIVE}
        if not live:
            return entries
        async with disconnect_watch(request, waiter):
            while not waiter.done and time.monotonic() < deadline:
                await waiter.wait(_sleep_for(deadline, context.recheck_seconds))
                waiter.clear()
                handed = waiter.results
                if all(job_id in handed for job_id in ids):
                    # The delivery that finished them read them for us (one
                    # read transaction fewer on the way to the user).
                    return [handed[job_id] for job_id in ids]
                entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
                if any(entry.id in live and entry.status in _TERMINAL for entry in entries):
                    break
        return entries

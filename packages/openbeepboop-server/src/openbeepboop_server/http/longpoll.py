"""The two long-polls: a node waiting for jobs, a client waiting for results.

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

from openbeepboop_schemas import TERMINAL_STATUSES, FetchRequest, Lease, PollEntry
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from openbeepboop_server.http.context import ServerContext
from openbeepboop_server.http.service_calls import run_service
from openbeepboop_server.keys import Caller
from openbeepboop_server.wakeups import Waiter

_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
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
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


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
    with context.wakeups.fetching(fetch.models) as waiter:
        async with disconnect_watch(request, waiter):
            while True:
                waiter.clear()
                leases = await run_service(context.db, fetch.max_jobs, queue.claim, caller, fetch)
                if leases or waiter.done or time.monotonic() >= deadline:
                    return leases
                wake_at = await run_in_threadpool(queue.next_claimable_at, fetch.models)
                await waiter.wait(_sleep_for(deadline, context.recheck_seconds, wake_at))
                if waiter.done:
                    # The node hung up or the server is stopping: claiming now
                    # would only strand the jobs until their leases expire.
                    return []


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
    with context.wakeups.watching(ids) as waiter:
        entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
        live = {entry.id for entry in entries if entry.status in _LIVE}
        if not live:
            return entries
        async with disconnect_watch(request, waiter):
            while not waiter.done and time.monotonic() < deadline:
                await waiter.wait(_sleep_for(deadline, context.recheck_seconds))
                waiter.clear()
                entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
                if any(entry.id in live and entry.status in _TERMINAL for entry in entries):
                    break
        return entries

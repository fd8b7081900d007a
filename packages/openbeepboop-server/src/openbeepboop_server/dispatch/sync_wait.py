"""Waiting for one job's outcome for as long as a synchronous caller may wait.

``POST /openai/v1/chat/completions`` queues an ordinary job and holds the
request until the job is terminal. The wait is the poll long-poll of
:mod:`.waiting` (a watcher woken by the delivery that finishes the job,
which also hands it the entry), repeated until the caller's own deadline,
since one long-poll is capped at ``[server] max_wait_seconds``. A caller
that hangs up before a node has leased its job leaves no GPU work behind:
the job is cancelled if it is still QUEUED; one already running finishes and
is kept, to be collected through the native API.

A caller whose key is revoked or expires while it waits is answered ``401``
(as a new request with the key is) and its job is treated as after a
hang-up: cancelled if no node has leased it yet, so no GPU works for a key
that may no longer read the answer; one already running finishes and is
kept (an ADMIN key can still read it).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from openbeepboop_schemas import JobStatus, PollEntry

from openbeepboop_server.dispatch.calls import run_service
from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.dispatch.waiting import DisconnectWatch, poll_entries
from openbeepboop_server.dispatch.wakeups import Waiter
from openbeepboop_server.errors import KeyNoLongerValid
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.statuses import TERMINAL


@dataclass(frozen=True)
class SyncOutcome:
    """Where a synchronous wait ended: the job's last entry and why the wait stopped."""

    entry: PollEntry
    #: The caller hung up (the job was cancelled if it had not started).
    disconnected: bool = False
    #: The server is shutting down.
    closed: bool = False

    @property
    def finished(self) -> bool:
        """True if the job is terminal."""
        return self.entry.status in TERMINAL


async def wait_for_job(
    context: DispatchContext,
    caller: Caller,
    job_id: str,
    timeout: float,
    disconnect_watch: DisconnectWatch,
    *,
    idempotency_key: str | None = None,
    just_queued: bool = True,
) -> SyncOutcome:
    """Wait up to ``timeout`` seconds for ``job_id`` to be terminal.

    The caller holds a slot of the key for the whole wait
    (``context.sync_chat_slots``), taken before the job was queued.
    ``idempotency_key``: the key the request was sent with; a job cancelled
    because its caller hung up forgets it, so that the caller's retry queues
    the request again instead of finding a cancelled job. ``just_queued``:
    False when the job may be older than this request (a retry answered
    with an earlier request's job): its status is read before the wait.
    """
    gone = False

    @contextlib.asynccontextmanager
    async def watch(waiter: Waiter) -> AsyncIterator[None]:
        nonlocal gone
        async with disconnect_watch(waiter):
            try:
                yield
            finally:
                gone = gone or waiter.disconnected

    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            [entry] = await poll_entries(
                context, caller, [job_id], remaining, watch, slot_held=True, known_live=just_queued
            )
        except KeyNoLongerValid:
            await _cancel_if_queued(context, caller, job_id, idempotency_key)
            raise
        just_queued = False
        if entry.status in TERMINAL:
            return SyncOutcome(entry)
        if gone:
            cancelled = await _cancel_if_queued(context, caller, job_id, idempotency_key)
            return SyncOutcome(cancelled or entry, disconnected=True)
        if context.wakeups.closed:
            return SyncOutcome(entry, closed=True)
        if remaining <= 0:
            return SyncOutcome(entry)


async def _cancel_if_queued(
    context: DispatchContext, caller: Caller, job_id: str, idempotency_key: str | None
) -> PollEntry | None:
    """Cancel the job if no node has leased it yet; its entry if it was cancelled.

    Not while another request waits on it: a retry of the same request (its
    ``Idempotency-Key``) that reached this server before the hang-up was seen.
    """
    if context.wakeups.watched([job_id]):
        return None
    cancel = functools.partial(context.queue.cancel, only_queued=True, forget_key=idempotency_key)
    cancelled = await run_service(context.db, 1, cancel, caller, job_id)
    if cancelled is None or cancelled.status != JobStatus.CANCELLED.value:
        return None
    context.metrics.cancelled.inc()
    context.wakeups.jobs_changed([job_id])
    return cancelled

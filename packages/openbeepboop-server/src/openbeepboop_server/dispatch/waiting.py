"""The two long-polls: a node waiting for leases, a client waiting for results.

Both follow one pattern. Take one of the key's long-poll slots
(:mod:`.slots`), register a waiter, then read the database; if there is
nothing to answer yet, sleep until a wake-up or the deadline, and read
again. Changes made by another replica reach a parked waiter as a wake-up
too, from the process's one periodic re-check (:mod:`.recheck`): a parked
poll reads nothing of its own while nothing changes. No database
transaction is open while sleeping, and the sleep is a future the wake-up
resolves (:meth:`~openbeepboop_server.dispatch.wakeups.Waiter.wait`): no
thread is held and nothing spins.

A parked poll keeps only what it needs to answer: the ids it was asked about
(at most ``MAX_POLL_IDS``) and the waiter's tuple of those still live; the
HTTP layer lets go of the request body before it parks.

The caller passes a :data:`DisconnectWatch`: for the waiter of a long-poll, a
block during which the client hanging up marks the waiter disconnected (the
HTTP layer turns its request's ``http.disconnect`` into that). A fetch whose
node has gone claims nothing more: the jobs stay queued for someone who is
listening.

A long-poll whose API key is revoked or expires while it waits is ended by
the periodic re-check (:meth:`~.wakeups.Wakeups.keys_refused`): it raises
:class:`~openbeepboop_server.errors.KeyNoLongerValid` (``401``, as a new
request with the key gets) and answers nothing it has not already sent. A
fetch gives back, in the same step, leases written for it that it can no
longer hand out (a claim in flight, a submit's hand-off), so no job waits
for a lease nobody will renew.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from anyio.to_thread import run_sync
from openbeepboop_schemas import FetchRequest, Lease, PollEntry

from openbeepboop_server.dispatch.calls import run_service
from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.dispatch.empty_looks import look_key
from openbeepboop_server.dispatch.handoff import give_back
from openbeepboop_server.dispatch.wakeups import Waiter
from openbeepboop_server.errors import KeyNoLongerValid
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.statuses import LIVE, TERMINAL
from openbeepboop_server.scopes import check_scope

#: Given a long-poll's waiter: a block during which the client hanging up disconnects it.
DisconnectWatch = Callable[[Waiter], AbstractAsyncContextManager[None]]


def check_key(waiter: Waiter) -> None:
    """Raise :class:`KeyNoLongerValid` if the waiter's key was revoked or expired."""
    if waiter.refused:
        raise KeyNoLongerValid("invalid or revoked API key")


def _sleep_for(deadline: float, wake_at: float | None = None) -> float:
    timeout = deadline - time.monotonic()
    if wake_at is not None:
        timeout = min(timeout, max(0.0, wake_at - time.time()))
    return max(0.0, timeout)


async def fetch_leases(
    context: DispatchContext,
    caller: Caller,
    fetch: FetchRequest,
    disconnect_watch: DisconnectWatch,
) -> list[Lease]:
    """Claim jobs for ``fetch``, waiting up to its ``wait`` (capped by config) for some."""
    queue = context.queue
    wait = min(fetch.wait, context.settings.server.max_wait_seconds)
    if wait <= 0:
        return await run_service(context.db, fetch.max_jobs, queue.claim, caller, fetch)
    deadline = time.monotonic() + wait
    wakeups, looks = context.wakeups, context.empty_looks
    key = look_key(caller, fetch)
    with (
        context.fetch_slots.hold(caller.key_id),
        context.fetch_models.hold(caller.key_id, fetch.models),
        wakeups.fetching(
            fetch.models, (caller, fetch), fetch.node_id, key_id=caller.key_id
        ) as waiter,
    ):
        async with disconnect_watch(waiter):
            # Refused before anything else, asked or not (the claim checks it as well).
            check_scope(caller, fetch.node_id, [*fetch.models, *fetch.declared_models])
            while True:
                waiter.clear()
                generation = wakeups.generation
                # Nothing changed since this node last found nothing: it would
                # find nothing again (.empty_looks), so it does not ask.
                look = looks.unchanged(key, generation, time.time())
                if look is not None:
                    leases, wake_at = [], look.wake_at
                else:
                    leases = await run_service(
                        context.db, fetch.max_jobs, queue.claim, caller, fetch
                    )
                    if leases and waiter.refused:
                        await give_back(context, caller, fetch.node_id, leases)
                        leases = []
                    if leases:
                        looks.forget(key)
                    elif not waiter.done and time.monotonic() < deadline:
                        wake_at = await run_sync(queue.next_claimable_at, fetch.models)
                        looks.remember(key, generation, wake_at)
                check_key(waiter)
                if leases or waiter.done or time.monotonic() >= deadline:
                    return leases
                waiter.parked = True
                try:
                    await waiter.wait(_sleep_for(deadline, wake_at))
                finally:
                    waiter.parked = False
                if waiter.reserved:
                    leases = await waiter.handed()
                    if leases and (waiter.disconnected or waiter.refused):
                        await give_back(context, caller, fetch.node_id, leases)
                        check_key(waiter)
                        return []
                    if leases:
                        return leases
                check_key(waiter)
                if waiter.done:
                    # The node hung up or the server is stopping: claiming now
                    # would only strand the jobs until their leases expire.
                    return []


async def poll_entries(
    context: DispatchContext,
    caller: Caller,
    ids: list[str],
    wait: float | None,
    disconnect_watch: DisconnectWatch,
    *,
    slot_held: bool = False,
    known_live: bool = False,
) -> list[PollEntry]:
    """Poll ``ids``; with ``wait``, hold the answer until one live job becomes terminal.

    A waiting poll takes one of the key's long-poll slots, unless the caller
    already holds one for it (``slot_held``: a synchronous chat takes its slot
    before it queues the job, so a 429 never follows a stored job).

    ``known_live``: the caller has just queued these jobs itself (a
    synchronous chat), so the first read, which could only say "live", is
    skipped. Should one of them finish in the instant between its submit and
    the waiter's registration, the periodic re-check (:mod:`.recheck`) wakes
    the poll: at worst one ``recheck_seconds`` late, never lost.
    """
    queue = context.queue
    wait = min(wait or 0.0, context.settings.server.max_wait_seconds)
    if wait <= 0:
        return await run_service(context.db, len(ids), queue.poll, caller, ids)
    deadline = time.monotonic() + wait
    slot = contextlib.nullcontext() if slot_held else context.poll_slots.hold(caller.key_id)
    with slot, context.wakeups.watching(ids, caller, key_id=caller.key_id) as waiter:
        if known_live:
            live = set(ids)
        else:
            entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
            check_key(waiter)
            live = {entry.id for entry in entries if entry.status in LIVE}
            if not live:
                return entries
            # Parked, the poll holds only its ids: the entries (results included)
            # are read again when it answers.
            context.wakeups.narrow(waiter, live)
            del entries
        async with disconnect_watch(waiter):
            while not waiter.done and time.monotonic() < deadline:
                if not await waiter.wait(_sleep_for(deadline)):
                    break  # the deadline
                waiter.clear()
                check_key(waiter)
                handed = waiter.results
                if all(job_id in handed for job_id in ids):
                    # The delivery that finished them read them for us (one
                    # read transaction fewer on the way to the user).
                    return [handed[job_id] for job_id in ids]
                entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
                check_key(waiter)
                if any(entry.id in live and entry.status in TERMINAL for entry in entries):
                    return entries
                del entries
        check_key(waiter)
        # The deadline, a hang-up or a shutdown: the entries as they are now
        # (callers that wait on may use them even when nobody reads the answer).
        entries = await run_service(context.db, len(ids), queue.poll, caller, ids)
        check_key(waiter)
        return entries

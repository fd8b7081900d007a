"""A node's lease watch: hold the answer until one of its leases is cancelled or lost.

Without it a node learns of a cancel only from its next heartbeat, a third
of the lease later (100 s at the default 300 s lease), while its GPU keeps
working on an answer nobody wants. A node that holds leases keeps one watch
open instead, and this answers it as soon as one of them ends (docs/node.md,
"How fast a cancel reaches a running job").

It follows the other long-polls (:mod:`.waiting`): take one of the key's
lease-watch slots, register the waiter *before* the first read, read, then
sleep until a wake-up or the deadline. The wake-ups are the ones polls
already get: a cancel (``POST /v1/jobs/{id}/cancel``, a batch cancel) or a
lease expiry calls :meth:`~.wakeups.Wakeups.jobs_changed` for its jobs, and
the process's periodic re-check (:mod:`.recheck`) wakes the watch when
another replica cancelled one of its jobs. A read with nothing to report
narrows the watch to the leases still running, so the node's own
deliveries do not keep waking it.
"""

from __future__ import annotations

import time

from openbeepboop_schemas import LeaseWatchRequest, LeaseWatchResponse

from openbeepboop_server.dispatch.calls import run_service
from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.dispatch.waiting import DisconnectWatch, check_key
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.lease_watch import WatchedLeases
from openbeepboop_server.scopes import check_scope


def _answer(found: WatchedLeases) -> LeaseWatchResponse:
    return LeaseWatchResponse(cancelled=found.cancelled, lost=found.lost)


async def watch_leases(
    context: DispatchContext,
    caller: Caller,
    watch: LeaseWatchRequest,
    disconnect_watch: DisconnectWatch,
) -> LeaseWatchResponse:
    """Answer which of ``watch.leases`` were cancelled or lost, waiting up to its ``wait``.

    A key made with ``--node-id`` may watch only as that node, as it may
    fetch, heartbeat and deliver only as it: the node's setup checks its key
    with a watch, which then refuses a key scoped to another node id before
    the node runs, without recording anything.
    """
    check_scope(caller, watch.node_id, None)
    queue, refs = context.queue, watch.leases
    wait = min(watch.wait, context.settings.server.max_wait_seconds)
    if wait <= 0:
        return _answer(await run_service(context.db, len(refs), queue.watched_leases, caller, refs))
    deadline = time.monotonic() + wait
    with (
        context.lease_watch_slots.hold(caller.key_id),
        context.wakeups.watching_leases(
            (ref.job_id for ref in refs), key_id=caller.key_id
        ) as waiter,
    ):
        async with disconnect_watch(waiter):
            while True:
                waiter.clear()
                check_key(waiter)  # a revoked or expired key is told so (401), nothing else
                found = await run_service(context.db, len(refs), queue.watched_leases, caller, refs)
                check_key(waiter)
                if found.ended or waiter.done:
                    return _answer(found)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _answer(found)
                context.wakeups.narrow_leases(waiter, found.held)
                await waiter.wait(remaining)

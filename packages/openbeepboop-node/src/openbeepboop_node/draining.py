"""Draining at shutdown: finish what runs, hand the rest back, deliver what finished.

Once fetching has stopped, prefetched leases that never got a slot go back to
the server at once (a release requeues the job without waiting for its lease
to expire). Running jobs get ``shutdown_grace`` seconds to finish; the ones
still running then are aborted and released too. Everything finished is
then delivered: ``run`` tries for up to ``SHUTDOWN_DELIVERY_SECONDS``,
``batch`` for as long as the server is up or has been down less than
``batch_give_up``. What is not delivered, releases included, stays in the
spool for the next start. A refused key or a failed loop skips the waiting:
nothing would be accepted.
"""

from __future__ import annotations

import asyncio
import logging

from openbeepboop_node.backoff import Connectivity
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.delivery import Deliverer
from openbeepboop_node.exceptions import KeyRejectedError, ServerUnavailableError
from openbeepboop_node.running import JobRunner

logger = logging.getLogger(__name__)

#: After shutdown, how long ``run`` keeps trying to deliver before leaving the
#: rest in the spool for the next start (at most; never more than the grace
#: period, never less than SHUTDOWN_DELIVERY_MIN_SECONDS).
SHUTDOWN_DELIVERY_SECONDS = 10.0
SHUTDOWN_DELIVERY_MIN_SECONDS = 1.0


async def drain(
    config: NodeConfig,
    runner: JobRunner,
    deliverer: Deliverer,
    connectivity: Connectivity,
    *,
    batch: bool,
    background: list[asyncio.Task[None]],
    failure: BaseException | None,
) -> None:
    """Let running jobs finish (within the grace period), release the rest, deliver.

    Called once fetching has stopped; ``background`` are the delivery and
    heartbeat loops, ``failure`` what ended the fetch loop, if anything did.
    """
    # A refused key: nothing will be accepted, so there is nothing to wait for.
    broken = isinstance(failure, KeyRejectedError) or any(t.done() for t in background)
    # `batch` gave up on an unreachable server: finish and spool, do not wait to deliver.
    unreachable = isinstance(failure, ServerUnavailableError)
    # Prefetched leases that never got a slot go back at once: starting
    # them now would only hold the shutdown up.
    unstarted = runner.abort(
        [job_id for job_id, task in runner.tasks.items() if task not in runner.calling]
    )
    await asyncio.gather(*unstarted.values(), return_exceptions=True)
    running = list(runner.tasks.values())
    if running and not broken and config.shutdown_grace > 0:
        logger.info(
            "waiting up to %.0f s for %d running job(s) to finish",
            config.shutdown_grace,
            len(running),
        )
        await asyncio.wait(running, timeout=config.shutdown_grace)
    leftover = runner.abort(list(runner.tasks))
    await asyncio.gather(*leftover.values(), return_exceptions=True)
    for job_id in [*unstarted, *leftover]:
        lease = runner.leases.get(job_id)
        if lease is not None:
            runner.release(lease)
    if broken or unreachable:
        return
    if not batch:
        grace = min(SHUTDOWN_DELIVERY_SECONDS, config.shutdown_grace)
        await deliverer.wait_idle(max(SHUTDOWN_DELIVERY_MIN_SECONDS, grace))
        return
    # batch: keep trying while the server is up or has been down only briefly.
    while not await deliverer.wait_idle(1.0):
        if any(task.done() for task in background):
            return
        if connectivity.outage_seconds() > config.batch_give_up:
            return

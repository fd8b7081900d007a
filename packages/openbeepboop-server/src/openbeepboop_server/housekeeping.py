"""Background upkeep while the server runs: expire leases, purge old jobs.

Lease expiry runs every ``[queue] reap_interval_seconds`` (1 s by default), so
a dead node's jobs go back to the queue within about a second of their lease
running out; each expiry wakes the long-polls that may care. Purging finished
jobs past retention runs once soon after start-up and then every
``purge_interval_seconds`` (an hour). Both run the synchronous service calls
in the thread pool; a failure is logged and retried on the next tick, never
fatal. With several replicas each runs its own reaper: the service calls are
safe to run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from anyio.to_thread import run_sync

from openbeepboop_server.context import ServerContext

logger = logging.getLogger(__name__)

#: The first purge waits this long after start-up, out of the way of the first requests.
FIRST_PURGE_DELAY_SECONDS = 5.0


class Housekeeper:
    """Runs the reaper loop of one app; :meth:`start` at start-up, :meth:`stop` at shutdown."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin the background loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        """Stop the loop and wait for the current step to finish."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def expire_leases(self) -> list[str]:
        """One reaper step: requeue or fail jobs whose lease ran out, and wake waiters."""
        context = self._context
        expired = await run_sync(context.queue.expire_leases)
        if expired:
            logger.info("%d lease(s) expired: %s", len(expired), ", ".join(expired[:10]))
            context.metrics.lease_expiries.inc(len(expired))
            context.wakeups.queue_changed()
            context.wakeups.jobs_changed(expired)
        return expired

    async def purge(self) -> int:
        """One purge step: delete finished jobs older than the retention period."""
        context = self._context
        purged = await run_sync(context.queue.purge_finished)
        if purged:
            logger.info("purged %d finished job(s) past retention", purged)
            context.metrics.purged.inc(purged)
        return purged

    async def _run(self) -> None:
        queue_settings = self._context.settings.queue
        next_purge = time.monotonic() + min(
            FIRST_PURGE_DELAY_SECONDS, queue_settings.purge_interval_seconds
        )
        while True:
            try:
                await self.expire_leases()
            except Exception:
                logger.exception("expiring leases failed; retrying on the next tick")
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + queue_settings.purge_interval_seconds
                try:
                    await self.purge()
                except Exception:
                    logger.exception("purging finished jobs failed; retrying next time")
            await asyncio.sleep(queue_settings.reap_interval_seconds)

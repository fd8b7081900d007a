"""The batch driver: validates new batches and moves running ones on, in the background.

Every ``[openai] batch_check_seconds`` (and at once when a batch is created
or cancelled) it validates ``validating`` batches into jobs (waking the
nodes that serve their models) and lets :meth:`BatchService.advance` expire,
finish cancelling and finalise the others; jobs it cancels wake the polls
watching them. Work is done in the thread pool; a failing step is logged
and retried on the next tick, and a batch whose validation fails is
skipped until then, so it holds up no other. Each replica runs one; the service's
conditional updates keep them from doing the same work twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from anyio.to_thread import run_sync

from openbeepboop_server.db.faults import RoundFailures, is_unavailable
from openbeepboop_server.dispatch.context import DispatchContext
from openbeepboop_server.queue.batch_lines import LineParser
from openbeepboop_server.queue.batches import VALIDATING, BatchService

logger = logging.getLogger(__name__)


class BatchDriver:
    """One background task per app; :meth:`kick` makes it look now."""

    def __init__(
        self, context: DispatchContext, interval: float, line_parser: LineParser | None = None
    ) -> None:
        self._context = context
        self._interval = interval
        self._service = (
            BatchService(context.db, context.queue.policy)
            if line_parser is None
            else BatchService(context.db, context.queue.policy, line_parser=line_parser)
        )
        self._kicked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin the loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batches")

    async def stop(self) -> None:
        """Stop the loop and wait for its current step."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kick(self) -> None:
        """Look at the batches now rather than at the next tick."""
        self._kicked.set()

    async def step(self) -> None:
        """Validate new batches, then advance running ones."""
        service, wakeups = self._service, self._context.wakeups
        for batch_id, status in await run_sync(service.active):
            if status == VALIDATING:
                try:
                    models = await run_sync(service.validate, batch_id)
                except Exception as exc:
                    if is_unavailable(exc):
                        raise  # every batch would fail alike: the round's failure
                    # One batch that cannot be validated now must not hold up
                    # the others, nor the running batches' progress below.
                    logger.exception("validating batch %s failed; retrying next time", batch_id)
                    continue
                if models:
                    self._context.metrics.submitted.inc(len(models))
                    wakeups.jobs_available(models)
        advanced = await run_sync(service.advance)
        if advanced.cancelled_jobs:
            self._context.metrics.cancelled.inc(len(advanced.cancelled_jobs))
            wakeups.jobs_changed(advanced.cancelled_jobs)

    async def _run(self) -> None:
        failures = RoundFailures(logger, "driving batches")
        while True:
            self._kicked.clear()
            try:
                await self.step()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()
            # Not ``asyncio.wait_for``: on Python < 3.12 it can swallow the
            # task's cancellation when a kick lands at the same moment, and
            # :meth:`stop` would then wait for a loop that never ends.
            kicked = asyncio.ensure_future(self._kicked.wait())
            try:
                await asyncio.wait({kicked}, timeout=self._interval)
            finally:
                kicked.cancel()

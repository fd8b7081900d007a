"""One periodic database re-check for every parked long-poll of the process.

A long-poll is woken at once by changes made through its own process
(:mod:`openbeepboop_server.dispatch.wakeups`). Changes made elsewhere — another
replica on the same PostgreSQL database, or a second process on the same
SQLite file — reach it only through the database, so something has to look.
That used to be every parked poll re-reading its own jobs once a second:
3,000 idle polls were 3,000 reads a second, and the loop had no time left for
real requests.

Now one task per process looks for all of them, once per
``recheck_seconds`` (``[server] recheck_seconds``, 1 s by default), and
wakes only the waiters it concerns:

* the API keys of the waiting long-polls: one indexed read of which of them
  were revoked or have expired; those long-polls end with ``401`` (the CLI
  that revokes a key is another process, and a replica's own revoke sends
  it no notice either way, so this read is what ends them on SQLite; on
  PostgreSQL a key change's notice runs a round at once, :meth:`Rechecker.keys_changed`);
* the ids some poll waits on: one indexed read (per 500 ids) of which are now
  terminal; their polls are woken and read their entries as after any wake-up;
* the models parked fetchers wait for: per model, an index walk of at most as
  many claimable jobs as there are parked fetchers for it; that many fetchers
  are woken, oldest first;
* every :func:`node_touch_seconds`, the registry rows of the nodes waiting in a
  fetch get ``last_seen = now`` in one statement, so a node that idles in
  long-polls stays "seen" (``/v1/models``, the status) without claiming.

While nothing is parked the task reads nothing; while polls are parked and
nothing changes it costs those few reads per second, whatever their number.
On PostgreSQL, changes made by other replicas arrive at once as notices
(:mod:`.replicas`); the re-check is the safety net behind them, for a
notice lost while the listening connection was down. It runs on PostgreSQL
and SQLite alike: SQLite is meant for one server
process, but nothing stops an operator from starting two on one file, and the
safety net is what keeps their long-polls correct then.
"""

from __future__ import annotations

import asyncio
import logging
import time

from anyio.to_thread import run_sync

from openbeepboop_server.db.faults import RoundFailures
from openbeepboop_server.dispatch.context import DispatchContext

logger = logging.getLogger(__name__)

#: How often, at most, the nodes waiting in a fetch get their registry row
#: refreshed; far below the default ``node_seen_seconds`` (at least 90 s).
NODE_TOUCH_SECONDS = 10.0
#: Touches per ``node_seen_seconds`` at least, so a short window configured by
#: an operator never sees an idle node fall out between two touches.
TOUCHES_PER_WINDOW = 3
#: Watched ids looked at per re-check, so a flood of ids costs a bounded read
#: per tick (the rest are looked at on the next ticks, in turn).
MAX_IDS_PER_CHECK = 20_000


def node_touch_seconds(node_seen_seconds: float) -> float:
    """Seconds between two touches of the parked nodes' rows for a freshness window."""
    return min(NODE_TOUCH_SECONDS, node_seen_seconds / TOUCHES_PER_WINDOW)


class Rechecker:
    """Runs the re-check of one app: :meth:`run` as a task, :meth:`check` for one round."""

    def __init__(self, context: DispatchContext) -> None:
        self._context = context
        self._next_touch: float | None = None  # set by the first round
        self._offset = 0
        self._kicked = asyncio.Event()

    def keys_changed(self) -> None:
        """Run a round now: an API key was revoked or changed somewhere (on the event loop).

        The replica listener asks for one when a notice says so, so the
        long-polls of a revoked key end at once rather than at the next tick.
        """
        self._kicked.set()

    def kick(self) -> None:
        """Run a round now rather than at the next tick (on the event loop).

        The replica listener (:mod:`.replicas`) asks for one when it starts
        listening again after losing its connection, or when a notice was too
        large to say what changed. Either way this process may have missed
        news, so no fetch may trust an earlier empty look (:mod:`.empty_looks`).
        """
        self._context.wakeups.news_lost()
        self._kicked.set()

    async def run(self) -> None:
        """Re-check every ``recheck_seconds`` (or when kicked) until cancelled; a failure
        waits a round."""
        failures = RoundFailures(logger, "re-checking the parked long-polls")
        while True:
            # Not ``asyncio.wait_for``: on Python < 3.12 it can swallow the
            # task's cancellation when a kick lands at the same moment, and
            # the loop would then outlive the app's shutdown.
            kicked = asyncio.ensure_future(self._kicked.wait())
            try:
                await asyncio.wait({kicked}, timeout=self._context.recheck_seconds)
            finally:
                kicked.cancel()
            self._kicked.clear()
            try:
                await self.check()
            except Exception as exc:
                failures.failed(exc)
            else:
                failures.succeeded()

    async def check(self) -> None:
        """One round: end the long-polls of refused keys, wake the polls whose jobs
        finished and the fetchers that have work."""
        context = self._context
        wakeups, queue = context.wakeups, context.queue
        keys = wakeups.waiting_keys()
        if keys:
            wakeups.keys_refused(await run_sync(context.keys.refused_among, keys))
        watched = self._next_ids(wakeups.watched_ids())
        if watched:
            finished = await run_sync(queue.finished_among, watched)
            wakeups.jobs_changed(finished)
        demand = wakeups.parked_demand()
        if demand:
            wakeups.jobs_available(await run_sync(queue.claimable_models, demand))
        now = time.monotonic()
        touch_seconds = node_touch_seconds(queue.policy.node_seen_seconds)
        if self._next_touch is None:
            self._next_touch = now + touch_seconds
        if now >= self._next_touch:
            self._next_touch = now + touch_seconds
            waiting = wakeups.parked_nodes()
            if waiting:
                await run_sync(queue.touch_nodes, waiting)

    def _next_ids(self, ids: list[str]) -> list[str]:
        """At most :data:`MAX_IDS_PER_CHECK` of ``ids``, taking turns across rounds."""
        if len(ids) <= MAX_IDS_PER_CHECK:
            self._offset = 0
            return ids
        start = self._offset if self._offset < len(ids) else 0
        chosen = ids[start : start + MAX_IDS_PER_CHECK]
        self._offset = start + len(chosen)
        return chosen

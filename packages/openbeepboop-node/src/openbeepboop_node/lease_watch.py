"""Hearing at once that a running job was cancelled: the node's lease watch.

The heartbeat (:mod:`~openbeepboop_node.heartbeat`) also reports cancelled
leases, but only every third of the lease (100 s at the default 300 s), and
a node whose slots are all busy sends nothing else in between: its GPU would
keep working on an answer nobody wants. So while the node holds leases it
keeps one long-poll open, ``POST /internal/queue/watch``, which the server
answers as soon as one of them is cancelled or lost; the job's task is then
cancelled at once, which aborts its LLM call (the connection to the backend
is closed) and frees its slot for the next fetch (docs/node.md, "How fast a
cancel reaches a running job").

A lease joins the watch once it has been held for :data:`WATCH_AFTER_SECONDS`:
a short job is over before a cancel would save much, and a node running many
short jobs would otherwise renew its watch for each one (a watch cannot be
widened: it is ended, which closes its connection, and opened again), and
the watch is renewed at most once per :data:`MIN_WATCH_SECONDS`. A cancel
therefore reaches a job at once once it is watched, and within about two
seconds of its lease in the worst case.

A server without the endpoint (``404``: older than the node) leaves the node
as it was, learning of cancels at its heartbeats; it is asked again every
:data:`UNSUPPORTED_RETRY_SECONDS`, in case it was upgraded. A server that
cannot be reached is retried with backoff; the heartbeat and the fetch loop
report outages, so this loop stays quiet about them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from openbeepboop_schemas import MAX_HEARTBEAT_LEASES, LeaseRef, LeaseWatchResponse

from openbeepboop_node.backoff import Backoff
from openbeepboop_node.exceptions import ServerRequestError, ServerUnavailableError
from openbeepboop_node.heartbeat import GoneCallback
from openbeepboop_node.queue_client import QueueClient

logger = logging.getLogger(__name__)

#: Seconds a lease is held before it joins the watch.
WATCH_AFTER_SECONDS = 1.0
#: At least this long between the starts of two watches, unless the first
#: brought news: a node whose leases join often renews its watch at most once
#: per period, and a server that answers at once (``max_wait_seconds = 0``)
#: is not asked in a tight loop.
MIN_WATCH_SECONDS = 1.0
#: After a ``404`` (a server without the watch) or a refused body, ask again this much later.
UNSUPPORTED_RETRY_SECONDS = 600.0
#: The status a server without the endpoint answers.
NOT_FOUND = 404


class LeaseWatcher:
    """Keeps one lease watch open while leases are held; reports the cancelled and lost ones."""

    def __init__(
        self,
        client: QueueClient,
        backoff: Backoff,
        *,
        leases: Callable[[], list[LeaseRef]],
        on_gone: GoneCallback,
        wait: float,
        watch_after: float = WATCH_AFTER_SECONDS,
        min_watch: float = MIN_WATCH_SECONDS,
    ) -> None:
        self._client = client
        self._backoff = backoff
        self._leases = leases
        self._on_gone = on_gone
        self._wait = wait
        self._watch_after = watch_after
        self._min_watch = min_watch
        self._wake = asyncio.Event()
        #: When each held lease (by token) was first seen, on the loop's clock.
        self._first_seen: dict[str, float] = {}
        #: False once the server answered 404; True once it answered a watch.
        self.supported: bool | None = None
        #: Watches answered (with or without news).
        self.answered = 0

    def wake(self) -> None:
        """A lease was taken: it joins the watch once it is old enough."""
        self._wake.set()

    async def run(self) -> None:
        """Watch until cancelled; raises KeyRejectedError if the key is refused."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            ready, join_at = self._ready(loop.time())
            if not ready:
                await self._sleep(None if join_at is None else join_at - loop.time())
                continue
            started = loop.time()
            pause = await self._watch(ready)
            if pause is None:  # the server had nothing to report
                pause = self._min_watch - (loop.time() - started)
            if pause > 0:
                await asyncio.sleep(pause)

    def _ready(self, now: float) -> tuple[list[LeaseRef], float | None]:
        """The leases held long enough to watch, and when the next one will be."""
        first_seen: dict[str, float] = {}
        ready: list[LeaseRef] = []
        join_at: float | None = None
        for ref in self._leases():
            seen = first_seen[ref.lease_token] = self._first_seen.get(ref.lease_token, now)
            joins = seen + self._watch_after
            if joins <= now:
                ready.append(ref)
            elif join_at is None or joins < join_at:
                join_at = joins
        self._first_seen = first_seen
        return ready[:MAX_HEARTBEAT_LEASES], join_at

    async def _sleep(self, timeout: float | None) -> None:
        """Until :meth:`wake` or ``timeout`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _watch(self, refs: list[LeaseRef]) -> float | None:
        """One watch for ``refs``, ended early when another lease is ready to join it.

        Returns the seconds to wait before the next watch (0: at once), or
        None when the server answered with nothing to report.
        """
        loop = asyncio.get_running_loop()
        watched = {ref.lease_token for ref in refs}
        request = asyncio.ensure_future(self._client.watch_leases(refs, self._wait))
        renew_at = loop.time() + self._min_watch
        try:
            while not request.done():
                self._wake.clear()
                now = loop.time()
                ready, join_at = self._ready(now)
                if any(ref.lease_token not in watched for ref in ready):
                    if now >= renew_at:
                        return 0.0  # widened: the finally ends this one
                    # At most one renewal per min_watch, however fast leases join.
                    join_at = renew_at
                woken = asyncio.ensure_future(self._wake.wait())
                timeout = None if join_at is None else max(0.0, join_at - now)
                try:
                    await asyncio.wait(
                        {request, woken}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    woken.cancel()
        finally:
            # Awaited even when it is done: a request that failed just before
            # this watch was cancelled (a shutdown while the server is down)
            # would otherwise have its error logged as never retrieved.
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await request
        return self._answered(refs, request)

    def _answered(
        self, refs: list[LeaseRef], request: asyncio.Future[LeaseWatchResponse]
    ) -> float | None:
        try:
            answer = request.result()
        except ServerUnavailableError as exc:
            return self._backoff.next_delay(exc.retry_after)
        except ServerRequestError as exc:
            if exc.status_code == NOT_FOUND:
                if self.supported is not False:
                    logger.info(
                        "the queue server has no lease watch (older than this node): "
                        "cancels reach running jobs at the next heartbeat"
                    )
                self.supported = False
            else:
                logger.warning("lease watch refused: %s", exc)
            return UNSUPPORTED_RETRY_SECONDS
        self.supported = True
        self.answered += 1
        self._backoff.reset()
        # Only leases still held under the token that was watched: a job
        # leased again meanwhile is a new lease, and this answer is not about it.
        sent = {ref.job_id: ref.lease_token for ref in refs}
        held = {ref.job_id: ref.lease_token for ref in self._leases()}
        cancelled = [job for job in answer.cancelled if held.get(job, "") == sent.get(job)]
        lost = [job for job in answer.lost if held.get(job, "") == sent.get(job)]
        if cancelled:
            self._on_gone(cancelled, "cancelled")
        if lost:
            self._on_gone(lost, "lost")
        if answer.cancelled or answer.lost:
            return 0.0
        return None

"""Keeping leases alive while their jobs run, and hearing which ones to abort.

Every held lease is extended together, every third of the shortest lease
period among them, so a generation slower than the lease never loses it.
The server's answer names leases that were lost (expired, taken over) or
whose job was cancelled; the node aborts those jobs
(:mod:`~openbeepboop_node.running`). A cancel usually arrives long before
that, through the lease watch (:mod:`~openbeepboop_node.lease_watch`); the
heartbeat is the safety net, and the only path against an older server.
Nothing is sent while the node holds no lease: an idle node is already in
touch through its long-poll.

``heartbeat_interval``, when the operator set one, can only make heartbeats
more frequent. The node cannot tell from its config how long the server's
leases are, only from the leases themselves, and an interval longer than a
third of theirs would let them expire under a live node (each long job
would run again, up to the server's ``max_attempts``); such a setting is
named once in a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from openbeepboop_schemas import MAX_HEARTBEAT_LEASES, LeaseRef

from openbeepboop_node.backoff import Connectivity
from openbeepboop_node.exceptions import ServerRequestError, ServerUnavailableError
from openbeepboop_node.queue_client import QueueClient

logger = logging.getLogger(__name__)

#: Fraction of the lease period between two heartbeats.
HEARTBEAT_FRACTION = 1 / 3
#: Never heartbeat more often than this, whatever the lease.
MIN_HEARTBEAT_SECONDS = 0.05

GoneCallback = Callable[[Sequence[str], str], None]


class Heartbeater:
    """Extends the leases ``leases()`` returns; reports lost and cancelled ones."""

    def __init__(
        self,
        client: QueueClient,
        connectivity: Connectivity,
        *,
        leases: Callable[[], list[LeaseRef]],
        lease_seconds: Callable[[], float | None],
        on_gone: GoneCallback,
        on_extended: Callable[[Sequence[str], float], None] | None = None,
        models: Callable[[], Sequence[str]] | None = None,
        interval: float | None = None,
    ) -> None:
        self._client = client
        self._connectivity = connectivity
        self._leases = leases
        self._lease_seconds = lease_seconds
        self._on_gone = on_gone
        #: Told which leases an answer extended, and by how long from now.
        self._on_extended = on_extended
        #: The models to declare (those not paused), read at each heartbeat.
        self._models = models
        self._interval = interval
        self._warned = False
        self._wake = asyncio.Event()
        self.sent = 0

    def wake(self) -> None:
        """A lease was taken: start the heartbeat clock if it was idle."""
        self._wake.set()

    def period(self) -> float | None:
        """Seconds until the next heartbeat, or None while no lease is held.

        A third of the shortest held lease, or the configured interval when it is shorter.
        """
        seconds = self._lease_seconds()
        if seconds is None:
            return None
        due = max(MIN_HEARTBEAT_SECONDS, seconds * HEARTBEAT_FRACTION)
        if self._interval is None:
            return due
        if self._interval <= due:
            return self._interval
        if not self._warned:
            self._warned = True
            logger.warning(
                "heartbeat_interval = %g s is longer than a third of the server's %g s "
                "leases: heartbeats go every %.3g s so that no lease expires under a running job",
                self._interval,
                seconds,
                due,
            )
        return due

    async def run(self) -> None:
        """Heartbeat until cancelled; raises KeyRejectedError if the key is refused."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._leases():
                self._wake.clear()
                await self._wake.wait()
                continue
            due = loop.time() + (self.period() or MIN_HEARTBEAT_SECONDS)
            while (now := loop.time()) < due:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - now)
                # A lease taken meanwhile may be shorter than those this wait was timed for.
                due = min(due, loop.time() + (self.period() or MIN_HEARTBEAT_SECONDS))
            refs = self._leases()
            for start in range(0, len(refs), MAX_HEARTBEAT_LEASES):
                await self.beat(refs[start : start + MAX_HEARTBEAT_LEASES])

    async def beat(self, refs: list[LeaseRef]) -> None:
        """One heartbeat for ``refs``."""
        if not refs:
            return
        try:
            models = self._models() if self._models is not None else None
            answer = await self._client.heartbeat(refs, models)
        except ServerUnavailableError as exc:
            # Try again next period; a lease that expires meanwhile is reported lost.
            self._connectivity.failed(exc)
            return
        except ServerRequestError as exc:
            logger.warning("heartbeat refused: %s", exc)
            return
        self.sent += 1
        self._connectivity.succeeded()
        if answer.extended and self._on_extended is not None:
            self._on_extended(answer.extended, answer.lease_seconds)
        if answer.cancelled:
            self._on_gone(answer.cancelled, "cancelled")
        if answer.lost:
            self._on_gone(answer.lost, "lost")

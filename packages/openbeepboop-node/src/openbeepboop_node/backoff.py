"""Waiting out an unreachable server: exponential backoff with jitter, logged once.

Fetch, heartbeat and delivery all talk to the same server, so they share one
:class:`Connectivity`: the first failure logs a warning, the first success
after it logs that the server is back, and nothing is logged per retry.
Once a delivery failed, only a delivery ends the outage: a server too busy to
take results often still answers a heartbeat, and counting that as "back"
logged "unreachable" and "reachable again" in turn at every retry.
"""

from __future__ import annotations

import logging
import random
import time

logger = logging.getLogger(__name__)

#: Each failed attempt multiplies the wait by this much, up to the maximum.
BACKOFF_MULTIPLIER = 2.0
#: The wait is drawn from [JITTER_FLOOR * delay, delay] so nodes do not retry in step.
JITTER_FLOOR = 0.5


class Backoff:
    """Growing, jittered waits between attempts; :meth:`reset` after a success."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self._failures = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    @property
    def failures(self) -> int:
        """Attempts failed in a row since the last :meth:`reset`."""
        return self._failures

    def next_delay(self, hint: float | None = None) -> float:
        """Seconds to wait before the next attempt (``hint``: the server's Retry-After)."""
        ceiling = min(self.maximum, self.initial * BACKOFF_MULTIPLIER**self._failures)
        self._failures += 1
        delay = self._rng.uniform(JITTER_FLOOR * ceiling, ceiling)
        if hint is not None and hint > 0:
            delay = max(delay, min(hint, self.maximum))
        return delay

    def reset(self) -> None:
        """Start again from the initial wait."""
        self._failures = 0


class Connectivity:
    """Whether the server answers, logging only when that changes."""

    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        self._down_since: float | None = None
        #: A delivery failed and none has gone through since.
        self._deliveries_failing = False

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self._down_since is not None

    def outage_seconds(self) -> float:
        """How long the server has been unreachable (0 when it is up)."""
        return 0.0 if self._down_since is None else time.monotonic() - self._down_since

    def failed(self, reason: object, *, delivery: bool = False) -> None:
        """Record a failed call (``delivery``: a submit of results); logs only the first."""
        self._deliveries_failing = self._deliveries_failing or delivery
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "queue server %s unreachable (%s); retrying with backoff, results are kept%s",
                self._server_url,
                reason,
                # fetching.py holds new work back while results wait (docs/node.md).
                " and no new jobs fetched until they are delivered" if delivery else "",
            )

    def succeeded(self, *, delivery: bool = False) -> None:
        """Record a call the server answered; logs once when an outage ends.

        While deliveries fail, only a delivery (``delivery``) ends it.
        """
        if delivery:
            self._deliveries_failing = False
        elif self._deliveries_failing:
            return
        if self._down_since is not None:
            logger.warning(
                "queue server %s reachable again after %.1f s",
                self._server_url,
                self.outage_seconds(),
            )
            self._down_since = None

"""How many leases a node holds beyond its slots: what one fetch round trip uses up.

A prefetched lease lets a freed slot start its next job at once, but every
lease held and not running is a job another node could be running. A fixed
number is wrong one way or the other: for jobs of a few seconds one waiting
lease is plenty, while a node finishing 200 jobs a second waits 20-40 ms for
a fetch to come back (its event loop is busy with LiteLLM's bookkeeping)
and frees 4-8 slots meanwhile (docs/performance.md, "Prefetch sized by the
node").

So the buffer is sized from what the node itself sees: the rate at which
its jobs end (smoothed over about a second, so that several jobs ending in
the same instant do not look like a torrent) times how long its recent
fetches took to come back (the slowest of the last few: on a busy loop
they vary from 2 to 50 ms), twice over (one round trip's worth to use while
the next fetch travels, one to spare), at least one lease and never more
than the operator's ``prefetch`` limit.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

#: Time constant of the job-end rate, seconds.
RATE_SECONDS = 1.0
#: How many recent round trips the estimate looks back over (it takes the slowest).
ROUND_TRIPS = 5


class PrefetchSizer:
    """Watches jobs end and fetches come back; says how many leases should wait for a slot."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        #: The most leases ever held beyond the slots (``prefetch``; 0 turns it off).
        self.limit = limit
        self._clock = clock
        self._ended = 0
        #: Job ends per second, smoothed; and when and at which count it was last updated.
        self._rate = 0.0
        self._rate_at = clock()
        self._rate_ended = 0
        self._round_trips: deque[float] = deque(maxlen=ROUND_TRIPS)

    def job_ended(self) -> None:
        """A held lease ended (finished, failed or aborted)."""
        self._ended += 1

    def round_trip(self, seconds: float) -> None:
        """A fetch that had jobs to hand out at once came back after ``seconds``.

        Only such fetches say how long a round trip takes: one that came
        back with fewer leases than asked for may have long-polled for them.
        """
        self._round_trips.append(seconds)

    @property
    def ending_per_second(self) -> float:
        """How fast held jobs end, smoothed over about :data:`RATE_SECONDS`."""
        now = self._clock()
        elapsed = now - self._rate_at
        if elapsed > 0:
            ended = self._ended - self._rate_ended
            weight = 1.0 - math.exp(-elapsed / RATE_SECONDS)
            # A burst of n ends in a short moment moves the rate by about n/RATE_SECONDS.
            self._rate += weight * (ended / elapsed - self._rate)
            self._rate_at, self._rate_ended = now, self._ended
        return self._rate

    @property
    def used_per_fetch(self) -> float:
        """Leases expected to be taken by freed slots while one fetch is out."""
        return self.ending_per_second * max(self._round_trips, default=0.0)

    @property
    def target(self) -> int:
        """Leases to hold beyond the slots now: 0 with prefetch off, else 1 to ``limit``."""
        if self.limit <= 0:
            return 0
        return min(self.limit, max(1, math.ceil(2 * self.used_per_fetch)))

    def fetch_now(self, waiting: int) -> bool:
        """With ``waiting`` leases queued for a slot, would they run out before a fetch returns?"""
        return self.limit > 0 and waiting <= self.used_per_fetch

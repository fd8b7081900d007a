"""The queue's tunables and their defaults (docs/server.md, "Configuration reference").

The defaults are defined here, once: ``config.py``'s ``[queue]`` section uses
them as its field defaults and is where values are validated (a bad value is
one line naming the setting). A :class:`QueuePolicy` built in code is taken
as given.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 3
#: First retry delay; it doubles per attempt, with jitter, up to the maximum.
DEFAULT_RETRY_BACKOFF_SECONDS = 2.0
DEFAULT_RETRY_BACKOFF_MAX_SECONDS = 300.0
DEFAULT_RETENTION_DAYS = 30.0
#: How recently a node must have been seen for ``/v1/models`` to list its models.
DEFAULT_NODE_SEEN_SECONDS = 300.0


@dataclass(frozen=True)
class QueuePolicy:
    """How long leases last, how often a job is tried, how long results are kept."""

    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    retry_backoff_max_seconds: float = DEFAULT_RETRY_BACKOFF_MAX_SECONDS
    retention_days: float = DEFAULT_RETENTION_DAYS
    node_seen_seconds: float = DEFAULT_NODE_SEEN_SECONDS

    def retry_delay(self, attempts: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds before a job that has failed ``attempts`` times may run again.

        Exponential (base, 2x base, 4x base, ...) capped at the maximum, then
        "equal jitter": a random point in the upper half, so retries of many
        jobs that failed together (a rate limit) spread out instead of
        returning in one burst.
        """
        exponent = max(attempts - 1, 0)
        capped = min(
            self.retry_backoff_max_seconds, self.retry_backoff_seconds * 2.0 ** min(exponent, 60)
        )
        return capped / 2 + rng() * capped / 2

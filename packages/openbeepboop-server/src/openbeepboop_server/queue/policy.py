"""The queue's tunables, with the defaults the spec names."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class QueuePolicy:
    """How long leases last, how often a job is tried, how long results are kept."""

    lease_seconds: float = 300
    max_attempts: int = 3
    retry_backoff_seconds: float = 2.0  # first retry delay; doubles per attempt, with jitter
    retry_backoff_max_seconds: float = 300
    retention_days: float = 30
    node_seen_seconds: float = 300  # "seen recently" for /v1/models

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.retry_backoff_seconds < 0 or self.retry_backoff_max_seconds < 0:
            raise ValueError("retry backoff must not be negative")
        if self.retention_days < 0:
            raise ValueError("retention_days must not be negative")
        if self.node_seen_seconds <= 0:
            raise ValueError("node_seen_seconds must be positive")

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

"""Job statuses and API key roles, spelled exactly as the contract says."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """Where a job is in its life. The last three are terminal."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """True once the job can never change again."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
)

#: Poll answers this for an id the caller may not see, so that another key's
#: job and a job that never existed are indistinguishable.
NOT_FOUND = "NOT_FOUND"


class Role(str, Enum):
    """What an API key may do: ADMIN everything, NODE the queue, USER jobs.

    METRICS only reads: ``/metrics`` and the pool status, for dashboards and
    scrapers that must not be able to submit, see prompts or take leases.
    """

    ADMIN = "ADMIN"
    NODE = "NODE"
    USER = "USER"
    METRICS = "METRICS"

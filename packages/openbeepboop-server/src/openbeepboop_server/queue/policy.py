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

from openbeepboop_schemas import MAX_WAIT_SECONDS

DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 3
#: First retry delay; it doubles per attempt, with jitter, up to the maximum.
DEFAULT_RETRY_BACKOFF_SECONDS = 2.0
DEFAULT_RETRY_BACKOFF_MAX_SECONDS = 300.0
DEFAULT_RETENTION_DAYS = 30.0
#: Nodes not seen for this long leave the registry (``nodes``, ``/v1/status``).
DEFAULT_NODE_RETENTION_DAYS = 30.0
#: Distinct live ``node_id``\ s one key may use at once, per server process: as
#: many as the fetches it may hold (``max_fetches_per_key``; each node holds
#: one), twice the largest pool we expect to share a key (500 nodes).
DEFAULT_MAX_NODES_PER_KEY = 1000
#: Distinct model names one key's parked fetches may wait for, and one key's
#: live nodes may declare, per process: four nodes' worth of entirely
#: different lists (a node declares at most 256), far above a real pool,
#: whose nodes share a catalogue. Each parked name costs the re-check an index
#: seek a second; each declared name a line of ``/v1/models``.
DEFAULT_MAX_FETCH_MODELS_PER_KEY = 1024
#: Waiting this long lifts a job by one step of ``priority`` (docs/api.md, "Claim order").
DEFAULT_PRIORITY_AGING_MINUTES = 10.0
#: Idle long-poll periods a node may stay silent before it no longer counts as seen.
SEEN_LONG_POLLS = 3
#: Heartbeat periods (a third of the lease) a busy node may stay silent, likewise.
SEEN_HEARTBEATS = 1.5


def default_node_seen_seconds(lease_seconds: float) -> float:
    """How recently a node must have been seen to count as serving its models.

    A live node is in touch at least this often: while idle it holds a fetch
    long-poll of at most :data:`MAX_WAIT_SECONDS` (the server refreshes its
    ``last_seen`` during it, too), and while every slot is busy it only
    heartbeats, every third of the lease. The window covers three long-polls
    or one and a half heartbeat periods, whichever is longer, so a live node
    never drops out between two contacts, while a node killed outright is
    gone within the window (docs/server.md, "Which models are served").
    """
    return max(SEEN_LONG_POLLS * MAX_WAIT_SECONDS, SEEN_HEARTBEATS * lease_seconds / 3)


#: How recently a node must have been seen for ``/v1/models`` to list its models,
#: at the default lease: 150 s.
DEFAULT_NODE_SEEN_SECONDS = default_node_seen_seconds(DEFAULT_LEASE_SECONDS)


@dataclass(frozen=True)
class QueuePolicy:
    """How long leases last, how often a job is tried, how long results are kept."""

    lease_seconds: float = DEFAULT_LEASE_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    retry_backoff_seconds: float = DEFAULT_RETRY_BACKOFF_SECONDS
    retry_backoff_max_seconds: float = DEFAULT_RETRY_BACKOFF_MAX_SECONDS
    retention_days: float = DEFAULT_RETENTION_DAYS
    node_seen_seconds: float = DEFAULT_NODE_SEEN_SECONDS
    #: Unfinished jobs older than this end FAILED (``expired``); None: never.
    max_queued_days: float | None = None
    node_retention_days: float = DEFAULT_NODE_RETENTION_DAYS
    #: Live node ids one key may use at once (per process); see :class:`~.nodes.NodeAdmission`.
    max_nodes_per_key: int = DEFAULT_MAX_NODES_PER_KEY
    #: Distinct model names one key's live nodes may declare (per process):
    #: ``[limits] max_fetch_models_per_key``; see :class:`~.nodes.NodeAdmission`.
    max_models_per_key: int = DEFAULT_MAX_FETCH_MODELS_PER_KEY
    #: Seconds of waiting worth one step of ``priority`` (fair_share.py).
    priority_aging_seconds: float = DEFAULT_PRIORITY_AGING_MINUTES * 60

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

"""What a node's lease watch reads: which of its leases were cancelled, lost, or are still held.

The same verdicts as a heartbeat (:func:`.leases.heartbeat`), read without a
write: a watch extends nothing, and it may be re-read on every wake-up. One
verdict differs: a lease the holder delivered itself (result, error or
release) is neither cancelled nor lost. The node knows, and the watch, which
is woken by that very delivery, must not tell it to abort a job that has
just finished (or, after a retryable error, a new lease of the same job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from openbeepboop_schemas import LeaseRef

from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.leases import CANCELLED, DELIVERED, load_leases


@dataclass
class WatchedLeases:
    """One read of a watch's leases, by job id."""

    cancelled: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    #: Still held and running: the ones worth waiting on.
    held: list[str] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        """True when the node has something to abort."""
        return bool(self.cancelled or self.lost)


def watched_leases(conn: sa.Connection, caller: Caller, refs: Sequence[LeaseRef]) -> WatchedLeases:
    """Sort ``refs`` into cancelled, lost and still held, for the node that holds them.

    A lease the caller never held is ``lost``, whatever became of it, so that
    a key learns nothing about another key's jobs by watching their tokens.
    """
    states = load_leases(conn, (ref.lease_token for ref in refs), lock=False)
    found = WatchedLeases()
    for ref in refs:
        state = states.get(ref.lease_token)
        if state is None or state.job.job_id != ref.job_id or not state.held_by(caller):
            found.lost.append(ref.job_id)
        elif state.outcome == CANCELLED:
            found.cancelled.append(ref.job_id)
        elif state.is_current:
            found.held.append(ref.job_id)
        elif state.outcome not in DELIVERED:
            found.lost.append(ref.job_id)  # expired, or the job moved on without it
    return found

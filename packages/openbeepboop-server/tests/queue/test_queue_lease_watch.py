"""What a lease watch reads: cancelled, lost, still held, or delivered by the node itself."""

from __future__ import annotations

from openbeepboop_schemas import (
    ErrorOutcome,
    FetchRequest,
    Lease,
    LeaseRef,
    NodeError,
    ResultOutcome,
    Role,
    SubmitRequest,
)
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, completion, make_caller, migrated_database


def _ref(lease: Lease) -> LeaseRef:
    return LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token)


def test_every_verdict_on_every_backend(backend_url: str, policy: QueuePolicy) -> None:
    db = migrated_database(backend_url)
    clock = FakeClock()
    try:
        keys = KeyService(db, clock=clock)
        alice = make_caller(keys, Role.USER, "alice")
        node = make_caller(keys, Role.NODE, "node")
        other = make_caller(keys, Role.NODE, "other")
        queue = QueueService(db, policy, clock=clock)
        queue.submit_many(alice, [chat_request() for _ in range(5)])
        running, cancelled, delivered, retried, expiring = queue.claim(
            node, FetchRequest(node_id="n", models=["*"], max_jobs=5)
        )
        queue.cancel(alice, cancelled.job_id)
        queue.deliver(
            node,
            SubmitRequest(
                node_id="n",
                outcomes=[
                    ResultOutcome(**_ref(delivered).model_dump(), result=completion()),
                    ErrorOutcome(
                        **_ref(retried).model_dump(),
                        error=NodeError(message="busy", retryable=True),
                    ),
                ],
            ),
        )
        all_refs = [_ref(lease) for lease in (running, cancelled, delivered, retried, expiring)]
        forged = LeaseRef(job_id=running.job_id, lease_token="lease-forged")

        found = queue.watched_leases(node, [*all_refs, forged])

        assert found.cancelled == [cancelled.job_id]
        assert found.lost == [running.job_id]  # the forged token
        assert found.held == [running.job_id, expiring.job_id]
        # Another key holds none of them: every one is lost, nothing else is told.
        assert queue.watched_leases(other, all_refs).lost == [ref.job_id for ref in all_refs]
        clock.advance(policy.lease_seconds + 1)
        # A read only: watching extended nothing, so both held leases expire.
        assert sorted(queue.expire_leases()) == sorted([running.job_id, expiring.job_id])
        assert queue.watched_leases(node, [_ref(expiring)]).lost == [expiring.job_id]
    finally:
        db.dispose()

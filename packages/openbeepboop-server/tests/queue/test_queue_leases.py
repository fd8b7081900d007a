"""Leases over time: heartbeats, expiry, cancellation, restart grace."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, HeartbeatRequest, Lease, LeaseRef
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs, leases
from openbeepboop_server.errors import NodeIdTaken
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request


def claim(queue: QueueService, node: Caller, n: int = 1, node_id: str = "gpu-1") -> list[Lease]:
    return queue.claim(node, FetchRequest(node_id=node_id, models=["*"], max_jobs=n))


def ref(lease: Lease) -> LeaseRef:
    return LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token)


def beat(queue: QueueService, node: Caller, *held: Lease, **extra: object):  # type: ignore[no-untyped-def]
    return queue.heartbeat(
        node, HeartbeatRequest(node_id="gpu-1", leases=[ref(lease) for lease in held], **extra)
    )


def expires_at(db: Database, job_id: str) -> float | None:
    with db.read() as conn:
        return conn.execute(
            sa.select(jobs.c.lease_expires_at).where(jobs.c.id == job_id)
        ).scalar_one()


def test_heartbeat_extends_held_leases(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock, db: Database
) -> None:
    queue.submit_many(alice, [chat_request(), chat_request()])
    a, b = claim(queue, node, 2)
    clock.advance(queue.policy.lease_seconds - 1)
    answer = beat(queue, node, a, b)
    assert answer.extended == [a.job_id, b.job_id]
    assert answer.lost == [] and answer.cancelled == []
    assert answer.lease_expires_at == clock.now + queue.policy.lease_seconds
    assert answer.lease_seconds == queue.policy.lease_seconds
    assert expires_at(db, a.job_id) == answer.lease_expires_at
    clock.advance(queue.policy.lease_seconds - 1)  # past the first expiry, not the new one
    assert queue.expire_leases() == []


def test_heartbeat_reports_lost_leases(
    queue: QueueService, alice: Caller, node: Caller, other_node: Caller, clock: FakeClock
) -> None:
    queue.submit_many(alice, [chat_request(), chat_request()])
    mine, expired = claim(queue, node, 2)
    forged = Lease.model_validate({**mine.model_dump(), "lease_token": "lease-forged"})
    clock.advance(queue.policy.lease_seconds + 1)
    # A lease that expired but was not yet taken back can still be extended.
    assert beat(queue, node, mine).extended == [mine.job_id]
    assert queue.expire_leases() == [expired.job_id]
    answer = beat(queue, node, mine, expired, forged)
    assert answer.extended == [mine.job_id]
    assert answer.lost == [expired.job_id, forged.job_id]
    # Another key may not act under my node's id (409), nor keep my lease alive from its own.
    with pytest.raises(NodeIdTaken):
        beat(queue, other_node, mine)
    other_beat = HeartbeatRequest(node_id="gpu-2", leases=[ref(mine)])
    assert queue.heartbeat(other_node, other_beat).lost == [mine.job_id]
    assert beat(queue, node).extended == [] and beat(queue, node).lease_expires_at is None


def test_heartbeat_refreshes_the_registry(
    queue: QueueService, node: Caller, clock: FakeClock
) -> None:
    queue.claim(node, FetchRequest(node_id="gpu-1", models=["a", "b"], version="1.0"))
    clock.advance(10)
    beat(queue, node)  # no models, no version: keep what we know
    (info,) = queue.list_nodes()
    assert (info.models, info.version, info.last_seen) == (["a", "b"], "1.0", clock.now)
    beat(queue, node, models=["c"], version="1.1")
    (info,) = queue.list_nodes()
    assert (info.models, info.version) == (["c"], "1.1")


def test_an_expired_lease_requeues_the_job_counting_the_attempt(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock, db: Database
) -> None:
    job = queue.submit(alice, chat_request())
    assert len(claim(queue, node)) == 1
    clock.advance(queue.policy.lease_seconds - 1)
    assert queue.expire_leases() == []
    clock.advance(2)
    assert queue.expire_leases() == [job.id]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "QUEUED" and entry.attempts == 1
    with db.read() as conn:
        assert conn.execute(sa.select(leases.c.outcome)).scalar_one() == "expired"
    (again,) = claim(queue, node)
    assert again.job_id == job.id and again.attempt == 2


def test_a_lease_expiring_after_max_attempts_fails_the_job(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    for _ in range(queue.policy.max_attempts):
        assert [lease.job_id for lease in claim(queue, node)] == [job.id]
        clock.advance(queue.policy.lease_seconds + 1)
        assert queue.expire_leases() == [job.id]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "FAILED"
    assert entry.attempts == queue.policy.max_attempts
    assert entry.error is not None and entry.error.type == "lease_expired"
    assert "lease expired" in entry.error.message
    assert claim(queue, node) == []


def test_expiry_handles_more_than_one_batch(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    queue.submit_many(alice, [chat_request()] * 600)
    claimed = claim(queue, node, 256) + claim(queue, node, 256) + claim(queue, node, 88)
    clock.advance(queue.policy.lease_seconds + 1)
    assert sorted(queue.expire_leases()) == sorted(lease.job_id for lease in claimed)


def test_cancel_a_queued_job(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    clock.advance(3)
    entry = queue.cancel(alice, job.id)
    assert entry is not None and entry.status == "CANCELLED" and entry.completed is False
    assert entry.completed_at == int(clock.now)
    assert claim(queue, node) == []


def test_cancel_a_processing_job_tells_the_node_at_its_next_heartbeat(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    job = queue.submit(alice, chat_request())
    (lease,) = claim(queue, node)
    assert queue.cancel(alice, job.id).status == "CANCELLED"  # type: ignore[union-attr]
    answer = beat(queue, node, lease)
    assert answer.cancelled == [job.id]
    assert answer.extended == [] and answer.lost == []


def test_cancel_of_a_terminal_job_changes_nothing(
    queue: QueueService, alice: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    first = queue.cancel(alice, job.id)
    clock.advance(100)
    second = queue.cancel(alice, job.id)
    assert first == second


def test_cancelled_jobs_never_expire_back_into_the_queue(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    claim(queue, node)
    queue.cancel(alice, job.id)
    clock.advance(queue.policy.lease_seconds * 10)
    assert queue.expire_leases() == []
    assert queue.get(alice, job.id).status == "CANCELLED"  # type: ignore[union-attr]


def test_restart_grace_gives_every_lease_a_full_period(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock, db: Database
) -> None:
    queue.submit_many(alice, [chat_request(), chat_request()])
    (early,) = claim(queue, node)
    clock.advance(queue.policy.lease_seconds / 2)
    (late,) = claim(queue, node)
    # The server was down for a long time; both leases are long past expiry.
    clock.advance(queue.policy.lease_seconds * 5)
    assert queue.grant_restart_grace() == 2
    assert expires_at(db, early.job_id) == clock.now + queue.policy.lease_seconds
    assert expires_at(db, late.job_id) == clock.now + queue.policy.lease_seconds
    assert queue.expire_leases() == []
    assert beat(queue, node, early, late).extended == [early.job_id, late.job_id]


def test_restart_grace_never_shortens_a_lease(
    queue: QueueService, alice: Caller, node: Caller, db: Database
) -> None:
    queue.submit(alice, chat_request())
    (lease,) = claim(queue, node)
    before = expires_at(db, lease.job_id)
    assert queue.grant_restart_grace() == 0
    assert expires_at(db, lease.job_id) == before

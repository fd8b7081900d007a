"""Storage stays bounded: old unfinished jobs expire, long-gone nodes are forgotten."""

from __future__ import annotations

import dataclasses

import pytest
from openbeepboop_schemas import FetchRequest, HeartbeatRequest, LeaseRef
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService
from openbeepboop_server.queue.transitions import EXPIRED_TYPE

from tests.support.core import FakeClock, chat_request

DAY = 86_400.0
MAX_DAYS = 0.5


@pytest.fixture
def policy() -> QueuePolicy:
    return QueuePolicy(lease_seconds=60, max_attempts=3, max_queued_days=MAX_DAYS)


def test_queued_jobs_older_than_max_queued_days_fail_as_expired(
    queue: QueueService, alice: Caller, clock: FakeClock
) -> None:
    old = queue.submit_many(alice, [chat_request()] * 3)
    clock.advance(MAX_DAYS * DAY - 10)
    young = queue.submit(alice, chat_request())
    assert queue.expire_unfinished() == []
    clock.advance(20)

    expired = queue.expire_unfinished()

    assert expired == [job.id for job in old]
    for job in old:
        entry = queue.get(alice, job.id)
        assert entry is not None and entry.status == "FAILED"
        assert entry.error is not None and entry.error.type == EXPIRED_TYPE
        assert "max_queued_days" in entry.error.message
    still = queue.get(alice, young.id)
    assert still is not None and still.status == "QUEUED"
    assert queue.expire_unfinished() == []


def test_a_processing_job_is_not_expired_while_its_lease_lives(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    [lease] = queue.claim(node, FetchRequest(node_id="n", models=["*"]))
    clock.advance(MAX_DAYS * DAY + 1)
    ref = LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token)
    queue.heartbeat(node, HeartbeatRequest(node_id="n", leases=[ref]))
    assert queue.expire_unfinished() == []
    assert queue.expire_leases() == []
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "PROCESSING"


def test_an_old_job_whose_lease_expires_fails_as_expired_instead_of_requeueing(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    queue.claim(node, FetchRequest(node_id="n", models=["*"]))
    clock.advance(MAX_DAYS * DAY + 1)

    assert queue.expire_leases() == [job.id]

    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "FAILED"
    assert entry.error is not None and entry.error.type == EXPIRED_TYPE


def test_without_max_queued_days_nothing_expires(
    db: Database, policy: QueuePolicy, alice: Caller, clock: FakeClock
) -> None:
    queue = QueueService(db, dataclasses.replace(policy, max_queued_days=None), clock=clock)
    job = queue.submit(alice, chat_request())
    clock.advance(10_000 * DAY)
    assert queue.expire_unfinished() == []
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "QUEUED"


def test_nodes_not_seen_for_node_retention_days_are_forgotten(
    queue: QueueService, node: Caller, clock: FakeClock
) -> None:
    queue.claim(node, FetchRequest(node_id="gone", models=["m"]))
    clock.advance(queue.policy.node_retention_days * DAY - 10)
    queue.claim(node, FetchRequest(node_id="alive", models=["m"]))
    assert queue.purge_nodes() == 0
    clock.advance(20)

    assert queue.purge_nodes() == 1

    assert [info.node_id for info in queue.list_nodes()] == ["alive"]
    # A node that comes back is simply registered again.
    queue.claim(node, FetchRequest(node_id="gone", models=["m"]))
    assert {info.node_id for info in queue.list_nodes()} == {"alive", "gone"}

"""A heartbeat or a result that arrives in time keeps its lease while it waits for the writer.

On SQLite the reaper and the nodes' calls queue for one writer, in no set
order. Each test here makes the reaper win that race: the node's call has
arrived before its lease ran out, and the reaper gets the writer first, with
the clock past the lease's end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import (
    FetchRequest,
    HeartbeatRequest,
    HeartbeatResponse,
    JobStatus,
    Lease,
    LeaseRef,
    ResultOutcome,
    SubmitRequest,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import transitions
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, completion


@pytest.fixture
def db(any_db: Database) -> Database:
    """Every test here on SQLite and PostgreSQL: the marks are the same on both."""
    return any_db


#: How long the writer stays busy past the lease's end.
WAIT_PAST_EXPIRY = 30.0


def claim(queue: QueueService, node: Caller, n: int = 1) -> list[Lease]:
    return queue.claim(node, FetchRequest(node_id="gpu-1", models=["*"], max_jobs=n))


def reaper_first(
    monkeypatch: pytest.MonkeyPatch, db: Database, queue: QueueService, clock: FakeClock
) -> list[str]:
    """Make the next write wait until the lease has run out and the reaper has run.

    Returns the list the reaper's expiries are put in.
    """
    real_write = db.write
    reaped: list[str] = []

    @contextlib.contextmanager
    def busy_writer() -> Iterator[sa.Connection]:
        monkeypatch.setattr(db, "write", real_write)
        clock.advance(WAIT_PAST_EXPIRY)
        reaped.extend(queue.expire_leases())
        with real_write() as conn:
            yield conn

    monkeypatch.setattr(db, "write", busy_writer)
    return reaped


@pytest.fixture
def held(queue: QueueService, alice: Caller, node: Caller) -> Lease:
    """One job of alice's, leased to the node."""
    queue.submit_many(alice, [chat_request()])
    (lease,) = claim(queue, node)
    return lease


def beat(queue: QueueService, node: Caller, lease: Lease) -> HeartbeatResponse:
    ref = LeaseRef(job_id=lease.job_id, lease_token=lease.lease_token)
    return queue.heartbeat(node, HeartbeatRequest(node_id="gpu-1", leases=[ref]))


def test_a_heartbeat_waiting_for_the_writer_keeps_its_lease(
    queue: QueueService,
    alice: Caller,
    node: Caller,
    held: Lease,
    clock: FakeClock,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.advance(queue.policy.lease_seconds - 1)  # the beat arrives in time
    reaped = reaper_first(monkeypatch, db, queue, clock)
    answer = beat(queue, node, held)
    assert reaped == []
    assert answer.extended == [held.job_id] and answer.lost == []
    # A full lease from when the beat was written, not from its arrival.
    assert answer.lease_expires_at == clock.now + queue.policy.lease_seconds
    assert queue.expire_leases() == []
    entry = queue.get(alice, held.job_id)
    assert entry is not None and entry.status == JobStatus.PROCESSING


def test_a_result_waiting_for_the_writer_is_kept(
    queue: QueueService,
    alice: Caller,
    node: Caller,
    held: Lease,
    clock: FakeClock,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock.advance(queue.policy.lease_seconds - 1)
    reaped = reaper_first(monkeypatch, db, queue, clock)
    outcome = ResultOutcome(job_id=held.job_id, lease_token=held.lease_token, result=completion())
    response = queue.deliver(node, SubmitRequest(node_id="gpu-1", outcomes=[outcome]))
    assert reaped == []
    assert [ack.ack for ack in response.acks] == ["accepted"]
    entry = queue.get(alice, held.job_id)
    assert entry is not None and entry.status == JobStatus.COMPLETED and entry.attempts == 1


def test_a_lease_is_taken_back_once_nothing_for_it_waits(
    queue: QueueService,
    node: Caller,
    held: Lease,
    clock: FakeClock,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sparing lasts only while the call waits; a node that then goes quiet still loses it."""
    reaper_first(monkeypatch, db, queue, clock)
    beat(queue, node, held)
    clock.advance(queue.policy.lease_seconds + 1)
    assert queue.expire_leases() == [held.job_id]


def test_a_failed_write_stops_sparing_its_leases(
    queue: QueueService,
    node: Caller,
    held: Lease,
    clock: FakeClock,
    db: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_write = db.write

    @contextlib.contextmanager
    def broken_writer() -> Iterator[sa.Connection]:
        raise sa.exc.OperationalError("BEGIN", {}, Exception("disk I/O error"))
        yield  # pragma: no cover

    monkeypatch.setattr(db, "write", broken_writer)
    with pytest.raises(sa.exc.OperationalError):
        beat(queue, node, held)
    monkeypatch.setattr(db, "write", real_write)
    clock.advance(queue.policy.lease_seconds + 1)
    assert queue.expire_leases() == [held.job_id]


def test_a_batch_wholly_spared_ends_the_reaper_step(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock, db: Database
) -> None:
    """Expired leases that all wait for the writer fill a batch: the step ends there
    instead of reading the same batch again and again."""
    count = transitions.EXPIRY_BATCH
    queue.submit_many(alice, [chat_request()] * count)
    claimed = [lease for _ in range(0, count, 256) for lease in claim(queue, node, 256)]
    assert len(claimed) == count
    clock.advance(queue.policy.lease_seconds + 1)
    spared = frozenset(lease.lease_token for lease in claimed)
    with db.write() as conn:
        batch = transitions.expire_batch(conn, now=clock.now, skip_locked=False, spare=spared)
    assert batch == transitions.ExpiredBatch([], more=False)
    with db.write() as conn:
        batch = transitions.expire_batch(conn, now=clock.now, skip_locked=False)
    assert len(batch.job_ids) == count and batch.more

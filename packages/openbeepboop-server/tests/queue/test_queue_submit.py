"""Submitting jobs: one, many, idempotently; what is stored."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import JobStatus
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.errors import IdempotencyKeyReused
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request


def _count(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def test_submit_returns_a_queued_job(queue: QueueService, alice: Caller, clock: FakeClock) -> None:
    job = queue.submit(alice, chat_request(model="llama3"))
    assert job.id.startswith("job-") and len(job.id) > 20
    assert job.status is JobStatus.QUEUED
    assert job.model == "llama3"
    assert job.object == "job"
    assert job.created_at == int(clock.now)


def test_the_request_is_stored_exactly_as_sent(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    request = chat_request(
        temperature=1,
        response_format={"type": "json_object"},
        seed=7,
        messages=[{"role": "user", "content": "Hi", "name": "ann"}],
    )
    job = queue.submit(alice, request)
    with db.read() as conn:
        stored = conn.execute(sa.select(jobs.c.request).where(jobs.c.id == job.id)).scalar_one()
    assert json.loads(stored) == request.to_payload()
    assert json.loads(stored)["temperature"] == 1  # not 1.0
    assert "stream" not in json.loads(stored)  # unset fields stay unset


def test_job_ids_are_unique(queue: QueueService, alice: Caller) -> None:
    created = queue.submit_many(alice, [chat_request()] * 500)
    assert len({job.id for job in created}) == 500


def test_submit_many_keeps_order_and_is_one_batch(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    requests = [chat_request(model=f"m{i % 3}", content=str(i)) for i in range(30)]
    created = queue.submit_many(alice, requests)
    assert [job.model for job in created] == [r.model for r in requests]
    assert _count(db) == 30
    entries = queue.poll(alice, [job.id for job in created])
    assert [entry.status for entry in entries] == ["QUEUED"] * 30


def test_submit_many_of_nothing_creates_nothing(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    assert queue.submit_many(alice, []) == []
    assert _count(db) == 0


def test_same_idempotency_key_returns_the_first_job_and_adds_no_row(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    first = queue.submit(alice, chat_request(content="a"), idempotency_key="retry-1")
    again = queue.submit(alice, chat_request(content="a"), idempotency_key="retry-1")
    assert again.id == first.id
    assert _count(db) == 1
    other = queue.submit(alice, chat_request(content="a"), idempotency_key="retry-2")
    assert other.id != first.id
    assert _count(db) == 2


def test_idempotent_replay_reports_the_current_status(
    queue: QueueService, alice: Caller, admin: Caller
) -> None:
    first = queue.submit(alice, chat_request(), idempotency_key="k")
    queue.cancel(alice, first.id)
    assert queue.submit(alice, chat_request(), idempotency_key="k").status is JobStatus.CANCELLED


def test_idempotent_submit_many_returns_all_first_jobs_in_order(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    requests = [chat_request(content=str(i)) for i in range(5)]
    first = queue.submit_many(alice, requests, idempotency_key="batch-7")
    again = queue.submit_many(alice, requests, idempotency_key="batch-7")
    assert [job.id for job in again] == [job.id for job in first]
    assert _count(db) == 5


def test_an_idempotency_key_replays_only_the_request_it_was_first_sent_with(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    first = queue.submit(alice, chat_request(), idempotency_key="k", request_hash="a" * 64)
    again = queue.submit(alice, chat_request(), idempotency_key="k", request_hash="a" * 64)
    assert again.id == first.id
    with pytest.raises(IdempotencyKeyReused):
        queue.submit_many(
            alice, [chat_request(), chat_request()], idempotency_key="k", request_hash="b" * 64
        )
    assert _count(db) == 1  # nothing of the refused request was stored
    # A key recorded without a hash (before revision 0007) replays whatever the body.
    old = queue.submit(alice, chat_request(), idempotency_key="old")
    assert queue.submit(alice, chat_request(), idempotency_key="old", request_hash="c" * 64).id == (
        old.id
    )


def test_idempotency_keys_are_per_caller(
    queue: QueueService, alice: Caller, bob: Caller, db: Database
) -> None:
    mine = queue.submit(alice, chat_request(), idempotency_key="shared")
    theirs = queue.submit(bob, chat_request(), idempotency_key="shared")
    assert mine.id != theirs.id
    assert _count(db) == 2
    assert queue.get(bob, mine.id) is None


def test_jobs_take_max_attempts_from_the_policy(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    job = queue.submit(alice, chat_request())
    with db.read() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job.id)).one()
    assert row.max_attempts == queue.policy.max_attempts
    assert row.attempts == 0
    assert row.owner_key_id == alice.key_id

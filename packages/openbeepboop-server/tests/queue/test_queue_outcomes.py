"""Delivering outcomes: accepted, duplicate, stale, rejected; retries and failures."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import (
    ErrorOutcome,
    FetchRequest,
    Lease,
    NodeError,
    ReleaseOutcome,
    ResultOutcome,
    SubmitRequest,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs, leases
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, completion


@pytest.fixture
def db(any_db: Database) -> Database:
    """Every test here on SQLite and PostgreSQL: a claim records its lease (which
    tells a stale token from a forged one) with a statement of each dialect's own."""
    return any_db


def claim_one(queue: QueueService, node: Caller, node_id: str = "gpu-1") -> Lease:
    (lease,) = queue.claim(node, FetchRequest(node_id=node_id, models=["*"], max_jobs=1))
    return lease


def result(lease: Lease, content: str = "Hello!") -> ResultOutcome:
    return ResultOutcome(
        job_id=lease.job_id, lease_token=lease.lease_token, result=completion(content)
    )


def error(
    lease: Lease, retryable: bool, message: str = "boom", type: str = "server_error"
) -> ErrorOutcome:
    return ErrorOutcome(
        job_id=lease.job_id,
        lease_token=lease.lease_token,
        error=NodeError(message=message, type=type, retryable=retryable),
    )


def release(lease: Lease) -> ReleaseOutcome:
    return ReleaseOutcome(job_id=lease.job_id, lease_token=lease.lease_token)


def send(queue: QueueService, node: Caller, *outcomes: object) -> list[tuple[str, str | None]]:
    response = queue.deliver(node, SubmitRequest(node_id="gpu-1", outcomes=list(outcomes)))
    return [(ack.ack, ack.status) for ack in response.acks]


def test_a_result_completes_the_job(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    clock.advance(5)
    assert send(queue, node, result(lease, "42")) == [("accepted", "COMPLETED")]
    entry = queue.get(alice, job.id)
    assert entry is not None
    assert entry.status == "COMPLETED" and entry.completed is True
    assert entry.result is not None and entry.result.choices[0].message.content == "42"
    assert entry.error is None
    assert entry.attempts == 1
    assert entry.completed_at == int(clock.now)


def test_the_result_is_kept_as_the_llm_returned_it(
    queue: QueueService, alice: Caller, node: Caller, db: Database
) -> None:
    job = queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    sent = completion(
        system_fingerprint="fp_1",
        usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4, "cached": 0},
    )
    queue.deliver(
        node,
        SubmitRequest(
            node_id="n",
            outcomes=[
                ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=sent)
            ],
        ),
    )
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.result is not None
    assert entry.result.model_dump(exclude_unset=True) == sent.model_dump(exclude_unset=True)
    assert entry.result.model_extra == {"system_fingerprint": "fp_1"}


def test_the_same_lease_again_is_a_duplicate_and_changes_nothing(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    job = queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    assert send(queue, node, result(lease, "first")) == [("accepted", "COMPLETED")]
    assert send(queue, node, result(lease, "second")) == [("duplicate", "COMPLETED")]
    assert send(queue, node, error(lease, retryable=False)) == [("duplicate", "COMPLETED")]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.result is not None
    assert entry.result.choices[0].message.content == "first"


def test_a_repeat_inside_one_request_is_a_duplicate(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    assert send(queue, node, result(lease, "a"), result(lease, "b")) == [
        ("accepted", "COMPLETED"),
        ("duplicate", "COMPLETED"),
    ]


def test_a_token_never_issued_is_rejected(queue: QueueService, alice: Caller, node: Caller) -> None:
    a, b = queue.submit_many(alice, [chat_request(), chat_request()])
    lease_a = claim_one(queue, node)
    forged = ResultOutcome(job_id=lease_a.job_id, lease_token="lease-forged", result=completion())
    # A real token, but for another job.
    swapped = ResultOutcome(job_id=b.id, lease_token=lease_a.lease_token, result=completion())
    unknown = ResultOutcome(job_id="job-nope", lease_token="lease-x", result=completion())
    assert send(queue, node, forged, swapped, unknown) == [("rejected", None)] * 3
    assert queue.get(alice, a.id).status == "PROCESSING"  # type: ignore[union-attr]
    assert queue.get(alice, b.id).status == "QUEUED"  # type: ignore[union-attr]


def test_another_keys_lease_is_rejected_but_admin_may_deliver(
    queue: QueueService, alice: Caller, node: Caller, other_node: Caller, admin: Caller
) -> None:
    queue.submit_many(alice, [chat_request(), chat_request()])
    first, second = queue.claim(node, FetchRequest(node_id="n", models=["*"], max_jobs=2))
    assert send(queue, other_node, result(first)) == [("rejected", None)]
    assert send(queue, node, result(first)) == [("accepted", "COMPLETED")]
    assert send(queue, admin, result(second)) == [("accepted", "COMPLETED")]


def test_a_result_for_a_lost_lease_is_stale(
    queue: QueueService, alice: Caller, node: Caller, other_node: Caller, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    old = claim_one(queue, node)
    clock.advance(queue.policy.lease_seconds + 1)
    assert queue.expire_leases() == [job.id]
    # Requeued, not yet re-claimed: still stale.
    assert send(queue, node, result(old)) == [("stale", "QUEUED")]
    new = claim_one(queue, other_node, node_id="gpu-2")
    assert new.attempt == 2
    assert send(queue, node, result(old)) == [("stale", "PROCESSING")]
    assert send(queue, other_node, result(new, "new")) == [("accepted", "COMPLETED")]
    assert send(queue, node, result(old)) == [("stale", "COMPLETED")]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.result is not None
    assert entry.result.choices[0].message.content == "new"


def test_a_result_for_a_cancelled_job_is_stale(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    job = queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    queue.cancel(alice, job.id)
    assert send(queue, node, result(lease)) == [("stale", "CANCELLED")]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "CANCELLED" and entry.result is None


def test_a_permanent_error_fails_at_once_with_the_nodes_message(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    job = queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    outcome = error(lease, retryable=False, message="model 'x' not found", type="not_found_error")
    assert send(queue, node, outcome) == [("accepted", "FAILED")]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "FAILED" and entry.completed is False
    assert entry.error is not None
    assert (entry.error.message, entry.error.type) == ("model 'x' not found", "not_found_error")
    assert entry.attempts == 1


def test_a_retryable_error_requeues_with_growing_backoff_then_fails(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock, db: Database
) -> None:
    job = queue.submit(alice, chat_request())
    base = queue.policy.retry_backoff_seconds
    for attempt in (1, 2):
        lease = claim_one(queue, node)
        assert lease.attempt == attempt
        assert send(queue, node, error(lease, retryable=True, message=f"503 #{attempt}")) == [
            ("accepted", "QUEUED")
        ]
        entry = queue.get(alice, job.id)
        assert entry is not None and entry.attempts == attempt
        with db.read() as conn:
            not_before = conn.execute(
                sa.select(jobs.c.not_before).where(jobs.c.id == job.id)
            ).scalar_one()
        full = base * 2 ** (attempt - 1)
        assert clock.now + full / 2 <= not_before <= clock.now + full  # jittered, exponential
        # Not claimable before its time; the service says when it will be.
        assert queue.claim(node, FetchRequest(node_id="n", models=["*"])) == []
        assert queue.next_claimable_at(["*"]) == not_before
        assert queue.next_claimable_at(["llama3"]) == not_before
        assert queue.next_claimable_at(["other"]) is None
        clock.now = not_before
    lease = claim_one(queue, node)
    assert lease.attempt == 3 == queue.policy.max_attempts
    assert send(queue, node, error(lease, retryable=True, message="503 last")) == [
        ("accepted", "FAILED")
    ]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "FAILED" and entry.attempts == 3
    assert entry.error is not None and entry.error.message == "503 last"
    assert entry.error.type == "server_error"
    assert queue.next_claimable_at(["*"]) is None


def test_backoff_is_capped(queue: QueueService) -> None:
    policy = queue.policy
    assert policy.retry_delay(50, lambda: 0.999) <= policy.retry_backoff_max_seconds
    assert policy.retry_delay(1, lambda: 0.0) == policy.retry_backoff_seconds / 2
    assert policy.retry_delay(3, lambda: 0.0) == 2 * policy.retry_backoff_seconds


def test_a_release_requeues_at_once_without_counting_the_attempt(
    queue: QueueService, alice: Caller, node: Caller, other_node: Caller
) -> None:
    job = queue.submit(alice, chat_request())
    lease = claim_one(queue, node)
    assert send(queue, node, release(lease)) == [("accepted", "QUEUED")]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "QUEUED" and entry.attempts == 0
    again = claim_one(queue, other_node, node_id="gpu-2")
    assert again.job_id == job.id and again.attempt == 1
    assert send(queue, node, release(lease)) == [("duplicate", "PROCESSING")]


def test_one_request_mixes_kinds_and_acks_in_order(
    queue: QueueService, alice: Caller, node: Caller, db: Database
) -> None:
    queue.submit_many(alice, [chat_request() for _ in range(3)])
    a, b, c = queue.claim(node, FetchRequest(node_id="n", models=["*"], max_jobs=3))
    assert send(queue, node, error(b, retryable=False), result(a), release(c)) == [
        ("accepted", "FAILED"),
        ("accepted", "COMPLETED"),
        ("accepted", "QUEUED"),
    ]
    with db.read() as conn:
        history = dict(conn.execute(sa.select(leases.c.token, leases.c.outcome)).all())
    assert history == {
        a.lease_token: "completed",
        b.lease_token: "failed",
        c.lease_token: "released",
    }


def test_deliver_and_read_returns_only_watched_jobs_that_finished(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    done, retried, unwatched = (queue.submit(alice, chat_request()) for _ in range(3))
    leases = {lease.job_id: lease for lease in (claim_one(queue, node) for _ in range(3))}
    outcomes = [
        result(leases[done.id]),
        error(leases[retried.id], retryable=True),
        result(leases[unwatched.id]),
    ]
    response, finished = queue.deliver_and_read(
        node, SubmitRequest(node_id="gpu-1", outcomes=outcomes), [done.id, retried.id]
    )
    assert [ack.ack for ack in response.acks] == ["accepted"] * 3
    assert [(owner, entry.id, entry.status) for owner, entry in finished] == [
        (alice.key_id, done.id, "COMPLETED")
    ]
    assert finished[0][1] == queue.get(alice, done.id)  # what a poll would read

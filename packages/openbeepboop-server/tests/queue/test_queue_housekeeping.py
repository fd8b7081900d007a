"""Retention, queue depth, served models and the node list."""

from __future__ import annotations

import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, HeartbeatRequest, ResultOutcome, SubmitRequest
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import idempotency_keys, jobs, leases
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, completion

DAY = 86_400


def _count(db: Database, table: sa.Table) -> int:
    with db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_purge_deletes_only_terminal_jobs_past_retention(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock, db: Database
) -> None:
    retention = queue.policy.retention_days * DAY
    done, cancelled, queued, processing = queue.submit_many(
        alice, [chat_request()] * 4, idempotency_key="old"
    )
    (lease_done, lease_processing) = queue.claim(
        node, FetchRequest(node_id="n", models=["*"], max_jobs=2)
    )
    # submit_many keeps order and claims are FIFO: done, cancelled are first two.
    assert lease_done.job_id == done.id
    queue.cancel(alice, cancelled.id)  # cancelled while PROCESSING (holds 2nd lease)
    queue.deliver(
        node,
        SubmitRequest(
            node_id="n",
            outcomes=[
                ResultOutcome(
                    job_id=done.id, lease_token=lease_done.lease_token, result=completion()
                )
            ],
        ),
    )
    queue.claim(node, FetchRequest(node_id="n", models=["*"], max_jobs=1))  # `queued` -> processing
    clock.advance(retention - 10)
    recent = queue.submit(alice, chat_request())
    queue.cancel(alice, recent.id)
    assert queue.purge_finished() == 0
    clock.advance(20)
    assert queue.purge_finished() == 2
    remaining = {e.id for e in queue.list_jobs(alice, limit=100).data}
    assert remaining == {queued.id, processing.id, recent.id}
    assert _count(db, leases) == 1  # only the live lease's history is left
    assert _count(db, idempotency_keys) == 0
    assert queue.get(alice, done.id) is None
    assert lease_processing.job_id == cancelled.id
    # Past retention the idempotency key is forgotten: reusing it makes a new job.
    assert queue.submit(alice, chat_request(), idempotency_key="old").id not in remaining


def test_purge_in_batches(
    queue: QueueService, alice: Caller, clock: FakeClock, db: Database
) -> None:
    created = queue.submit_many(alice, [chat_request()] * 2_100)
    with db.write() as conn:
        conn.execute(jobs.update().values(status="CANCELLED", completed_at=clock.now))
    clock.advance(queue.policy.retention_days * DAY + 1)
    assert queue.purge_finished() == len(created)
    assert _count(db, jobs) == 0


def test_zero_retention_purges_every_finished_job(
    db: Database, alice: Caller, clock: FakeClock
) -> None:
    from openbeepboop_server.queue.policy import QueuePolicy

    queue = QueueService(db, QueuePolicy(retention_days=0), clock=clock)
    job = queue.submit(alice, chat_request())
    queue.cancel(alice, job.id)
    clock.advance(1)
    assert queue.purge_finished() == 1


def test_queue_depth_by_status_and_model(queue: QueueService, alice: Caller, node: Caller) -> None:
    queue.submit_many(alice, [chat_request(model=m) for m in ("a", "a", "a", "b")])
    queue.claim(node, FetchRequest(node_id="n", models=["a"], max_jobs=1))
    assert queue.queue_depth() == [("PROCESSING", "a", 1), ("QUEUED", "a", 2), ("QUEUED", "b", 1)]


def test_served_models_are_those_of_recently_seen_nodes(
    queue: QueueService, node: Caller, clock: FakeClock
) -> None:
    queue.claim(node, FetchRequest(node_id="old", models=["gone"]))
    clock.advance(queue.policy.node_seen_seconds + 1)
    queue.claim(node, FetchRequest(node_id="n1", models=["llama3", "*"]))
    queue.heartbeat(node, HeartbeatRequest(node_id="n2", models=["qwen", "llama3"]))
    assert queue.served_models() == ["llama3", "qwen"]
    assert [n.node_id for n in queue.list_nodes()] == ["n1", "n2", "old"]

"""Claiming: routing by model, FIFO, leases, the node registry, the index."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs, leases
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, make_caller, migrated_database


def fetch(models: list[str], max_jobs: int = 10, node_id: str = "gpu-1") -> FetchRequest:
    return FetchRequest(node_id=node_id, models=models, max_jobs=max_jobs, version="1.2.3")


def test_claim_returns_leases_with_the_request(
    queue: QueueService, alice: Caller, node: Caller, clock: FakeClock
) -> None:
    request = chat_request(model="llama3", seed=3)
    job = queue.submit(alice, request)
    (lease,) = queue.claim(node, fetch(["llama3"]))
    assert lease.job_id == job.id
    assert lease.model == "llama3"
    assert lease.attempt == 1
    assert lease.lease_seconds == queue.policy.lease_seconds
    assert lease.lease_expires_at == clock.now + queue.policy.lease_seconds
    assert lease.lease_token
    assert lease.request.to_payload() == request.to_payload()
    entry = queue.get(alice, job.id)
    assert entry is not None
    assert entry.status == "PROCESSING" and entry.attempts == 1
    assert entry.started_at == int(clock.now)


def test_a_claimed_job_is_not_claimed_again(
    queue: QueueService, alice: Caller, node: Caller, other_node: Caller
) -> None:
    queue.submit(alice, chat_request())
    assert len(queue.claim(node, fetch(["llama3"]))) == 1
    assert queue.claim(other_node, fetch(["llama3"], node_id="gpu-2")) == []
    assert queue.claim(node, fetch(["llama3"])) == []


def test_claim_is_fifo_and_honours_max_jobs(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    created = [job.id for job in queue.submit_many(alice, [chat_request()] * 7)]
    first = queue.claim(node, fetch(["llama3"], max_jobs=3))
    second = queue.claim(node, fetch(["llama3"], max_jobs=10))
    assert [lease.job_id for lease in first] == created[:3]
    assert [lease.job_id for lease in second] == created[3:]


def test_nodes_only_receive_their_models(queue: QueueService, alice: Caller, node: Caller) -> None:
    a = queue.submit(alice, chat_request(model="a"))
    b = queue.submit(alice, chat_request(model="b"))
    c = queue.submit(alice, chat_request(model="c"))
    assert queue.claim(node, fetch(["zzz"])) == []
    claimed = queue.claim(node, fetch(["c", "a"]))
    assert [lease.job_id for lease in claimed] == [a.id, c.id]  # FIFO across models
    assert {lease.model for lease in claimed} == {"a", "c"}
    assert queue.get(alice, b.id).status == "QUEUED"  # type: ignore[union-attr]


def test_star_takes_any_model(queue: QueueService, alice: Caller, node: Caller) -> None:
    created = [queue.submit(alice, chat_request(model=m)).id for m in ("x", "y", "z")]
    claimed = queue.claim(node, fetch(["*"]))
    assert [lease.job_id for lease in claimed] == created


def test_max_jobs_across_several_models(queue: QueueService, alice: Caller, node: Caller) -> None:
    created = [queue.submit(alice, chat_request(model=m)).id for m in "ababab"]
    claimed = queue.claim(node, fetch(["a", "b"], max_jobs=4))
    assert [lease.job_id for lease in claimed] == created[:4]


def test_claim_records_history_and_the_node(
    queue: QueueService, alice: Caller, node: Caller, db: Database, clock: FakeClock
) -> None:
    job = queue.submit(alice, chat_request())
    (lease,) = queue.claim(node, fetch(["llama3", "*"], node_id="box-7"))
    with db.read() as conn:
        row = conn.execute(sa.select(leases)).one()
        holder = conn.execute(
            sa.select(jobs.c.lease_node_id, jobs.c.lease_key_id).where(jobs.c.id == job.id)
        ).one()
    assert row.token == lease.lease_token
    assert row.node_id == "box-7" and row.key_id == node.key_id
    assert row.attempt == 1 and row.outcome is None and row.claimed_at == clock.now
    assert tuple(holder) == ("box-7", node.key_id)
    (info,) = queue.list_nodes()
    assert info.node_id == "box-7"
    assert info.key_name == "node-key"
    assert info.version == "1.2.3"
    assert info.models == ["*", "llama3"]
    assert info.last_seen == clock.now


def test_an_empty_claim_still_records_the_node(queue: QueueService, node: Caller) -> None:
    assert queue.claim(node, fetch(["llama3"], node_id="idle")) == []
    assert [n.node_id for n in queue.list_nodes()] == ["idle"]


def test_the_claim_queries_only_search_indexes(
    queue: QueueService, alice: Caller, bob: Caller, node: Caller, db: Database
) -> None:
    """A claim seeks indexes (per owner, per job): no scan of the table, no sort of the queue."""
    queue.submit_many(alice, [chat_request(model=m) for m in "ab" * 50])
    queue.submit_many(bob, [chat_request(model=m) for m in "ab" * 50])
    statements: list[tuple[str, object]] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(("SELECT", "WITH")) and "FROM jobs" in statement:
            statements.append((statement, params))

    assert len(queue.claim(node, fetch(["a"], max_jobs=3))) == 3
    assert len(queue.claim(node, fetch(["*"], max_jobs=3))) == 3
    sa.event.remove(db.engine, "before_cursor_execute", _record)
    assert statements
    with db.read() as conn:
        for statement, params in statements:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            plan = " | ".join(str(row[-1]) for row in rows)
            assert "TEMP B-TREE" not in plan, plan
            for step in (str(row[-1]) for row in rows):
                assert not step.startswith("SCAN jobs"), plan


def test_next_claimable_at_reads_only_the_backoff_index(
    queue: QueueService, alice: Caller, db: Database
) -> None:
    queue.submit_many(alice, [chat_request(model=m) for m in "ab" * 50])
    statements: list[tuple[str, object]] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if "min(not_before)" in statement:
            statements.append((statement, params))

    assert queue.next_claimable_at(["a", "b"]) is None
    assert queue.next_claimable_at(["*"]) is None
    sa.event.remove(db.engine, "before_cursor_execute", _record)
    with db.read() as conn:
        for statement, params in statements:
            plan = " | ".join(
                str(row[-1])
                for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
            assert "ix_jobs_backoff" in plan, plan


def test_a_busy_node_rewrites_its_registry_row_at_most_once_a_second(
    queue: QueueService, node: Caller, clock: FakeClock, db: Database
) -> None:
    writes: list[str] = []

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("UPDATE NODES"):  # every refresh starts so
            writes.append(statement)

    first = clock.now
    for _ in range(3):
        queue.claim(node, fetch(["a"]))
    assert len(writes) == 1
    clock.advance(0.5)
    queue.claim(node, fetch(["a", "b"]))  # new facts are written at once
    assert len(writes) == 2
    clock.advance(2)
    queue.claim(node, fetch(["a", "b"]))  # and last_seen at most a second late
    sa.event.remove(db.engine, "before_cursor_execute", _record)
    assert len(writes) == 3
    (info,) = queue.list_nodes()
    assert info.models == ["a", "b"] and info.last_seen == first + 2.5


def test_submit_and_claim_leases_the_new_job_in_the_same_transaction(
    queue: QueueService, alice: Caller, node: Caller, db: Database, clock: FakeClock
) -> None:
    job, (lease,) = queue.submit_and_claim(
        alice, chat_request(), None, node, fetch(["llama3"], node_id="parked")
    )
    assert lease.job_id == job.id and lease.attempt == 1
    assert lease.lease_expires_at == clock.now + queue.policy.lease_seconds
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "PROCESSING"
    with db.read() as conn:
        assert conn.execute(sa.select(leases.c.token, leases.c.node_id)).one() == (
            lease.lease_token,
            "parked",
        )
    assert [n.node_id for n in queue.list_nodes()] == ["parked"]


def test_submit_and_claim_still_takes_older_claimable_jobs_first(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    older = queue.submit(alice, chat_request())
    job, leased = queue.submit_and_claim(alice, chat_request(), None, node, fetch(["llama3"], 1))
    assert [lease.job_id for lease in leased] == [older.id]
    entry = queue.get(alice, job.id)
    assert entry is not None and entry.status == "QUEUED"


def test_submit_and_claim_replaying_an_idempotency_key_claims_nothing(
    queue: QueueService, alice: Caller, node: Caller
) -> None:
    first = queue.submit(alice, chat_request(), "same-key")
    job, leased = queue.submit_and_claim(alice, chat_request(), "same-key", node, fetch(["*"]))
    assert (job.id, leased) == (first.id, [])
    entry = queue.get(alice, first.id)
    assert entry is not None and entry.status == "QUEUED"


def test_submit_and_claim_on_every_backend(backend_url: str, policy: QueuePolicy) -> None:
    # On PostgreSQL the claim's FOR UPDATE SKIP LOCKED must see the row its own transaction added.
    db = migrated_database(backend_url)
    try:
        keys = KeyService(db)
        alice, node = make_caller(keys, Role.USER, "a"), make_caller(keys, Role.NODE, "n")
        queue = QueueService(db, policy)
        job, (lease,) = queue.submit_and_claim(alice, chat_request(), None, node, fetch(["*"]))
        assert lease.job_id == job.id
        assert queue.claim(node, fetch(["*"])) == []
    finally:
        db.dispose()


def test_a_claim_parses_requests_only_after_releasing_the_writer(
    db: Database,
    queue: QueueService,
    alice: Caller,
    node: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A large request parsed inside the transaction held the one SQLite writer
    # (and, on a small call, the event loop) for as long as the parse took.
    from openbeepboop_schemas import ChatCompletionRequest
    from openbeepboop_server.queue import claiming

    writer_free_at_parse: list[bool] = []
    parse = ChatCompletionRequest.model_validate_json

    class Spy:
        @staticmethod
        def model_validate_json(text: str) -> ChatCompletionRequest:
            writer_free_at_parse.append(db.writer_idle)
            return parse(text)

    monkeypatch.setattr(claiming, "ChatCompletionRequest", Spy)
    queue.submit_many(alice, [chat_request(), chat_request()])
    assert len(queue.claim(node, fetch(["*"]))) == 2
    assert writer_free_at_parse == [True, True]

"""The pool status builder: what each number counts, what it leaves out, and its query plans."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import (
    ErrorOutcome,
    FetchRequest,
    HeartbeatRequest,
    Lease,
    NodeError,
    ResultOutcome,
    SubmitRequest,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import pool_status
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, completion

SECRET = "PROMPT-SECRET-do-not-show"


def _claim(
    queue: QueueService, node: Caller, node_id: str, models: list[str], n: int = 1
) -> list[Lease]:
    return queue.claim(node, FetchRequest(node_id=node_id, models=models, max_jobs=n))


def _complete(queue: QueueService, node: Caller, node_id: str, leases: list[Lease]) -> None:
    outcomes = [
        ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=completion(SECRET))
        for lease in leases
    ]
    queue.deliver(node, SubmitRequest(node_id=node_id, outcomes=outcomes))


def _fail(
    queue: QueueService, node: Caller, node_id: str, leases: list[Lease], message: str
) -> None:
    outcomes = [
        ErrorOutcome(
            job_id=lease.job_id,
            lease_token=lease.lease_token,
            error=NodeError(message=message, type="invalid_request_error", retryable=False),
        )
        for lease in leases
    ]
    queue.deliver(node, SubmitRequest(node_id=node_id, outcomes=outcomes))


def test_an_empty_pool(queue: QueueService) -> None:
    status = queue.pool_status()
    assert (status.queued, status.processing, status.nodes_online) == (0, 0, 0)
    assert status.models == [] and status.nodes == [] and status.recent_failures == []
    assert status.window.error_rate is None and status.oldest_queued_seconds is None
    assert status.window_seconds == pool_status.DEFAULT_WINDOW_SECONDS


def test_every_number(
    queue: QueueService, clock: FakeClock, alice: Caller, bob: Caller, node: Caller
) -> None:
    # An old finish, outside the window: in no count.
    queue.submit(alice, chat_request("m1", SECRET))
    _complete(queue, node, "gone", _claim(queue, node, "gone", ["m1"]))
    clock.advance(pool_status.DEFAULT_WINDOW_SECONDS + 1)

    queue.submit(alice, chat_request("m1", SECRET))
    clock.advance(30)
    for _ in range(5):
        queue.submit(alice, chat_request("m1", SECRET))
    for _ in range(2):
        queue.submit(bob, chat_request("m2", SECRET))
    clock.advance(10)

    # n1 serves m1: completes 2 of them (the oldest first), then holds 1.
    _complete(queue, node, "n1", _claim(queue, node, "n1", ["m1"], 2))
    _claim(queue, node, "n1", ["m1"])
    # n2 serves m2 (and declares "*" too): fails one of bob's with a permanent error.
    _fail(queue, node, "n2", _claim(queue, node, "n2", ["m2"]), "context too long")
    queue.heartbeat(node, HeartbeatRequest(node_id="n2", leases=[], models=["m2", "*"]))
    queue.cancel(bob, queue.list_jobs(bob, status=None).data[0].id)
    clock.advance(5)

    status = queue.pool_status()
    assert status.queued == 3  # m1: 6 - 2 done - 1 held
    assert status.processing == 1
    assert status.oldest_queued_seconds == pytest.approx(15)  # the 5 submitted 15 s ago
    assert (status.window.completed, status.window.failed, status.window.cancelled) == (2, 1, 1)
    assert status.window.completed_per_minute == pytest.approx(2 * 60 / 300)
    assert status.window.error_rate == pytest.approx(1 / 3, abs=1e-3)

    by_model = {model.model: model for model in status.models}
    assert list(by_model) == ["m1", "m2"]  # busiest first; "*" is not a model
    m1, m2 = by_model["m1"], by_model["m2"]
    assert (m1.queued, m1.processing, m1.nodes) == (3, 1, 1)
    assert m1.oldest_queued_seconds == pytest.approx(15)
    assert (m1.window.completed, m1.window.failed, m1.window.error_rate) == (2, 0, 0.0)
    assert (m2.queued, m2.processing, m2.nodes, m2.oldest_queued_seconds) == (0, 0, 1, None)
    assert (m2.window.failed, m2.window.cancelled, m2.window.error_rate) == (1, 1, 1.0)
    assert status.models_total == 2

    assert status.nodes_online == 2  # "gone" was last seen more than node_seen_seconds ago
    nodes = {view.node_id: view for view in status.nodes}
    assert set(nodes) == {"n1", "n2"}
    assert nodes["n1"].in_flight == 1 and nodes["n2"].in_flight == 0
    assert nodes["n1"].key_name == "node-key" and nodes["n1"].models == ["m1"]
    assert nodes["n1"].seen_seconds_ago == pytest.approx(5)
    assert nodes["n2"].models == ["*", "m2"]

    (failure,) = status.recent_failures
    assert (failure.model, failure.error_type, failure.error_message) == (
        "m2",
        "invalid_request_error",
        "context too long",
    )
    assert failure.failed_at == pytest.approx(clock.now - 5) and failure.attempts == 1

    usage = {entry.key_name: entry.window for entry in status.keys}
    assert usage["alice"].completed == 2
    assert (usage["bob"].failed, usage["bob"].cancelled) == (1, 1)
    assert status.keys_total == 2

    assert SECRET not in status.model_dump_json()


def test_a_node_leaves_the_online_list_after_node_seen_seconds(
    queue: QueueService, clock: FakeClock, node: Caller
) -> None:
    queue.heartbeat(node, HeartbeatRequest(node_id="n1", leases=[], models=["m1"]))
    assert [view.node_id for view in queue.pool_status().nodes] == ["n1"]
    clock.advance(queue.policy.node_seen_seconds + 1)
    status = queue.pool_status()
    assert status.nodes == [] and status.nodes_online == 0 and status.models == []


def test_lists_are_bounded_and_counted(
    queue: QueueService,
    alice: Caller,
    node: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(4):
        queue.submit(alice, chat_request(f"model-{i}"))
        queue.heartbeat(node, HeartbeatRequest(node_id=f"n{i}", leases=[], models=[f"model-{i}"]))
    for _ in range(pool_status.MAX_RECENT_FAILURES + 3):
        queue.submit(alice, chat_request("doomed"))
        _fail(queue, node, "killer", _claim(queue, node, "killer", ["doomed"]), "x" * 900)
    monkeypatch.setattr(pool_status, "MAX_STATUS_MODELS", 2)
    monkeypatch.setattr(pool_status, "MAX_STATUS_NODES", 3)

    status = queue.pool_status()
    assert len(status.models) == 2 and status.models_total == 5  # model-0..3 and doomed
    assert len(status.nodes) == 3 and status.nodes_online == 5
    assert len(status.recent_failures) == pool_status.MAX_RECENT_FAILURES
    message = status.recent_failures[0].error_message
    assert message is not None and len(message) == pool_status.MAX_FAILURE_MESSAGE_CHARS


def _plan(db: Database, statement: sa.Select[Any], params: dict[str, object]) -> str:
    with db.read() as conn:
        sql = statement.params(params).compile(conn, compile_kwargs={"literal_binds": True})
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
    return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize(
    ("name", "params", "index"),
    [
        ("_OLDEST_OF_MODEL", {"model": "m1"}, "ix_jobs_claim"),
        ("_OLDEST", {}, "ix_jobs_status_seq"),
        ("_ONLINE_NODES", {"since": 0.0}, "ix_nodes_last_seen"),
        ("_IN_FLIGHT", {}, "ix_jobs_status"),
        ("_FINISHED", {"since": 0.0}, "COVERING INDEX ix_jobs_finished"),
        ("_RECENT_FAILURES", {}, "ix_jobs_finished"),
    ],
)
def test_every_read_is_an_index_range(
    db: Database, name: str, params: dict[str, object], index: str
) -> None:
    """No statement of the builder scans the jobs table: each stays cheap with 1M jobs."""
    plan = _plan(db, getattr(pool_status, name), params)
    assert index in plan, plan
    assert not re.search(r"\bSCAN jobs\b(?! USING COVERING)", plan), plan

"""Odd but schema-valid input never becomes a database error, on either backend.

PostgreSQL refuses NUL characters in text parameters; the queue must answer
such input like any other unknown value instead of failing. Model names with
control characters are refused by the wire schema itself, so NUL reaches
the queue in every other field: ids, tokens, keys, contents, versions.
"""

from __future__ import annotations

import pytest
from openbeepboop_schemas import (
    NOT_FOUND,
    ErrorOutcome,
    FetchRequest,
    HeartbeatRequest,
    LeaseRef,
    NodeError,
    Role,
    SubmitRequest,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.errors import InvalidKeyName
from openbeepboop_server.keys import KeyService
from openbeepboop_server.nodes import record_node
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService
from openbeepboop_server.queue.views import CursorError

from tests.support.core import FakeClock, chat_request, make_caller

NUL = "a\x00b"
#: An ordinary model name: one with a NUL never passes the schemas.
MODEL = "nul-test-model"


def test_nul_characters_everywhere(any_db: Database) -> None:
    clock = FakeClock()
    keys = KeyService(any_db, clock=clock)
    user = make_caller(keys, Role.USER, "user")
    node = make_caller(keys, Role.NODE, "node")
    queue = QueueService(any_db, QueuePolicy(), clock=clock)

    job = queue.submit(user, chat_request(model=MODEL, content=NUL), idempotency_key=NUL)
    assert queue.submit(user, chat_request(model=MODEL), idempotency_key=NUL).id == job.id
    assert queue.get(user, NUL) is None
    assert queue.cancel(user, NUL) is None
    assert [e.status for e in queue.poll(user, [NUL, job.id])] == [NOT_FOUND, "QUEUED"]
    with pytest.raises(CursorError):
        queue.list_jobs(user, after=NUL)
    assert queue.next_claimable_at([NUL]) is None

    (lease,) = queue.claim(node, FetchRequest(node_id="n", models=[MODEL]))
    assert lease.job_id == job.id
    assert lease.request.messages[0].content == NUL  # the payload itself is untouched
    beat = queue.heartbeat(
        node,
        HeartbeatRequest(
            node_id="n",
            leases=[
                LeaseRef(job_id=job.id, lease_token=lease.lease_token),
                LeaseRef(job_id=NUL, lease_token=NUL),
            ],
            models=[MODEL],
        ),
    )
    assert beat.extended == [job.id] and beat.lost == [NUL]
    error = NodeError(message=NUL, type=NUL, retryable=False)
    acks = queue.deliver(
        node,
        SubmitRequest(
            node_id="n",
            outcomes=[
                ErrorOutcome(job_id=NUL, lease_token=NUL, error=error),
                ErrorOutcome(job_id=job.id, lease_token=lease.lease_token, error=error),
            ],
        ),
    ).acks
    assert [a.ack for a in acks] == ["rejected", "accepted"]
    entry = queue.get(user, job.id)
    assert entry is not None and entry.status == "FAILED"
    assert entry.error is not None and entry.error.message.startswith("a")
    # Below the schemas, the registry still stores a NUL it is handed (as U+FFFD).
    with any_db.write() as conn:
        record_node(conn, node_id=NUL, key_name=NUL, now=clock(), models=[NUL], version=NUL)
    assert queue.served_models() == ["a\ufffdb", MODEL]


def test_very_long_idempotency_keys(any_db: Database) -> None:
    keys = KeyService(any_db)
    user = make_caller(keys, Role.USER, "user")
    queue = QueueService(any_db, QueuePolicy())
    long_a, long_b = "k" * 5000 + "a", "k" * 5000 + "b"
    first = queue.submit(user, chat_request(), idempotency_key=long_a)
    assert queue.submit(user, chat_request(), idempotency_key=long_a).id == first.id
    assert queue.submit(user, chat_request(), idempotency_key=long_b).id != first.id


def test_key_names_must_be_printable(any_db: Database) -> None:
    keys = KeyService(any_db)
    with pytest.raises(InvalidKeyName):
        keys.create(Role.USER, NUL)
    assert keys.revoke(NUL) is False
    assert keys.authenticate("sk-" + NUL) is None


def test_a_stored_request_this_version_cannot_read_fails_instead_of_blocking_claims(
    any_db: Database,
) -> None:
    keys = KeyService(any_db)
    user = make_caller(keys, Role.USER, "user")
    node = make_caller(keys, Role.NODE, "node")
    queue = QueueService(any_db, QueuePolicy())
    broken, fine = queue.submit_many(user, [chat_request(), chat_request()])
    with any_db.write() as conn:
        conn.execute(
            jobs.update().where(jobs.c.id == broken.id).values(request='{"model": "llama3"}')
        )
    leases = queue.claim(node, FetchRequest(node_id="n", models=["*"], max_jobs=5))
    assert [lease.job_id for lease in leases] == [fine.id]
    entry = queue.get(user, broken.id)
    assert entry is not None and entry.status == "FAILED"
    assert entry.error is not None and entry.error.type == "invalid_request_error"


def test_a_stored_result_this_version_cannot_validate_is_still_shown(any_db: Database) -> None:
    keys = KeyService(any_db)
    user = make_caller(keys, Role.USER, "user")
    queue = QueueService(any_db, QueuePolicy())
    job = queue.submit(user, chat_request())
    with any_db.write() as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.id == job.id)
            .values(status="COMPLETED", result='{"id": "old", "choices": "weird"}')
        )
    (entry,) = queue.poll(user, [job.id])
    assert entry.status == "COMPLETED" and entry.result is not None
    assert entry.result.id == "old"

"""Cross-replica notices (db/notify.py): what a write transaction NOTIFYs, and when.

The payload tests are pure; the rest run on PostgreSQL (skipped without one,
failed under ``CI=true``) with a plain psycopg connection LISTENing, as
another replica would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from openbeepboop_schemas import ChatCompletionRequest, FetchRequest, Role
from openbeepboop_server.db import notify
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.notify import MAX_PAYLOAD_BYTES, Notice, decode
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import make_caller

#: How long a notice may take to arrive on a loaded machine (a deadline, not a sleep).
ARRIVAL_SECONDS = 10.0


# -- payloads --------------------------------------------------------------------------


def test_a_bulk_submit_of_1000_jobs_is_one_small_payload() -> None:
    notice = Notice(replica="r1", available={"llama3": 1000})
    (payload,) = notice.payloads()
    assert json.loads(payload) == {"r": "r1", "m": {"llama3": 1000}}
    assert decode(payload) == notice


def test_many_finished_ids_split_under_the_payload_limit_and_lose_none() -> None:
    ids = [f"job-{i:032x}" for i in range(2000)]
    notice = Notice(replica="r1", requeued=True, available={"a": 2, "b": 1}, finished=ids)
    payloads = notice.payloads()
    assert len(payloads) > 1
    assert all(len(payload.encode()) <= MAX_PAYLOAD_BYTES for payload in payloads)
    decoded = [decode(payload) for payload in payloads]
    assert all(part is not None and part.replica == "r1" for part in decoded)
    assert [job_id for part in decoded if part for job_id in part.finished] == ids
    assert any(part.requeued for part in decoded if part)
    merged: dict[str, int] = {}
    for part in decoded:
        assert part is not None
        merged.update(part.available)
    assert merged == {"a": 2, "b": 1}


def test_an_item_too_large_for_any_payload_becomes_look_at_everything() -> None:
    notice = Notice(replica="r1", available={"m" * (MAX_PAYLOAD_BYTES + 10): 1})
    (payload,) = notice.payloads()
    assert decode(payload) == Notice(replica="r1", overflow=True)


def test_a_key_change_rides_on_every_part_of_a_split_notice() -> None:
    (alone,) = Notice(replica="r1", keys=True).payloads()
    assert json.loads(alone) == {"r": "r1", "k": 1}
    assert decode(alone) == Notice(replica="r1", keys=True)
    ids = [f"job-{i:032x}" for i in range(2000)]
    parts = [decode(p) for p in Notice(replica="r1", keys=True, finished=ids).payloads()]
    assert len(parts) > 1 and all(part is not None and part.keys for part in parts)
    too_large = Notice(replica="r1", keys=True, available={"m" * (MAX_PAYLOAD_BYTES + 10): 1})
    (payload,) = too_large.payloads()
    assert decode(payload) == Notice(replica="r1", keys=True, overflow=True)
    assert Notice(replica="r1").payloads() == []


def test_payloads_that_are_not_ours_are_ignored() -> None:
    assert decode("not json") is None
    assert decode("[1, 2]") is None
    assert decode('{"m": {}}') is None


# -- on PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def listener(pg_db: Database) -> Iterator[object]:
    """A plain psycopg connection LISTENing on the database's channel."""
    import psycopg
    from psycopg import sql

    args, params = pg_db.engine.dialect.create_connect_args(pg_db.engine.url)
    conn = psycopg.connect(*args, **params, autocommit=True)
    channel = conn.execute(notify.CHANNEL_QUERY).fetchone()[0]  # type: ignore[index]
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    yield conn
    conn.close()


def _received(conn: object) -> list[Notice]:
    """Every notice delivered so far (waits briefly for stragglers)."""
    notices = []
    for message in conn.notifies(timeout=0.5):  # type: ignore[attr-defined]
        decoded = decode(message.payload)
        assert decoded is not None
        notices.append(decoded)
    return notices


def test_a_bulk_submit_sends_one_notification_when_it_commits(
    pg_db: Database, listener: object
) -> None:
    queue = QueueService(pg_db, QueuePolicy())
    requests = [
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": f"p{i}"}]}
        )
        for i in range(1000)
    ]
    queue.submit_many(make_caller(KeyService(pg_db), Role.USER, "alice"), requests)
    (notice,) = _received(listener)
    assert notice.available == {"m": 1000}
    assert notice.replica == pg_db.replica_id


def test_a_rolled_back_write_sends_nothing_and_leaves_nothing_behind(
    pg_db: Database, listener: object
) -> None:
    def failing_write() -> None:
        with pg_db.write() as conn:
            notify.jobs_finished(conn, ["job-never"])
            raise RuntimeError("the transaction fails after recording")

    with pytest.raises(RuntimeError):
        failing_write()
    with pg_db.write() as conn:
        notify.jobs_available(conn, ["m"])
    (notice,) = _received(listener)
    assert notice.available == {"m": 1} and notice.finished == []


def test_revoking_or_changing_a_key_tells_every_replica(pg_db: Database, listener: object) -> None:
    keys = KeyService(pg_db)
    keys.create(Role.USER, "alice")
    assert _received(listener) == []  # a new key is in no replica's cache
    keys.update("alice", {"max_queued": 5})
    keys.revoke("alice")
    assert [notice.keys for notice in _received(listener)] == [True, True]


def test_a_submit_handed_to_a_parked_node_wakes_no_other_replica(
    pg_db: Database, listener: object
) -> None:
    queue = QueueService(pg_db, QueuePolicy())
    keys = KeyService(pg_db)
    user, node = make_caller(keys, Role.USER, "alice"), make_caller(keys, Role.NODE, "n1")
    fetch = FetchRequest(node_id="n1", models=["m"], max_jobs=1, wait=30)
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    job, leases = queue.submit_and_claim(user, request, None, node, fetch)
    assert [lease.job_id for lease in leases] == [job.id]
    assert _received(listener) == []  # claimed as it was queued: nothing to wake elsewhere
    queue.submit(user, request, None)
    (notice,) = _received(listener)
    assert notice.available == {"m": 1}

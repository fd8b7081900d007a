"""Validating a batch into jobs: streamed, queued in chunks held from claims, all or nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import batches, file_chunks, jobs
from openbeepboop_server.keys import Caller
from openbeepboop_server.queue import batches as batches_module
from openbeepboop_server.queue import files as files_module
from openbeepboop_server.queue.batches import BatchService
from openbeepboop_server.queue.files import FileStore
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, migrated_database

URL = "/v1/chat/completions"
LINES = 7


@pytest.fixture
def db(backend_url: str) -> Iterator[Database]:
    """Both backends: the chunk transactions and the release are plain SQL on each."""
    database = migrated_database(backend_url)
    yield database
    database.dispose()


def _file(lines: int, bad: int | None = None) -> bytes:
    rows = []
    for number in range(1, lines + 1):
        row: dict[str, Any] = {
            "custom_id": f"c{number}",
            "method": "POST",
            "url": URL,
            "body": {"model": "m", "messages": [{"role": "user", "content": f"hi {number}"}]},
        }
        if number == bad:
            row["method"] = "GET"
        rows.append(json.dumps(row))
    return ("\n".join(rows) + "\n").encode()


def _batch(db: Database, clock: FakeClock, owner: Caller, content: bytes, **kw: Any) -> tuple:
    service = BatchService(db, QueuePolicy(), clock=clock, **kw)
    stored = FileStore(db, clock).save(owner.key_id, "in.jsonl", "batch", [content])
    batch = service.create(
        owner,
        input_file_id=stored.id,
        endpoint=URL,
        completion_window="24h",
        window_seconds=86400,
        metadata=None,
    )
    assert batch is not None
    return service, batch.id


def _jobs(db: Database, batch_id: str) -> list[Any]:
    with db.read() as conn:
        return conn.execute(
            sa.select(jobs.c.batch_line, jobs.c.custom_id, jobs.c.not_before)
            .where(jobs.c.batch_id == batch_id)
            .order_by(jobs.c.batch_line)
        ).all()


def _claim(queue: QueueService, node: Caller) -> list[Any]:
    fetch = FetchRequest(node_id="gpu-1", models=["m"], max_jobs=100, version="1")
    return queue.claim(node, fetch)


class CrashError(Exception):
    """The process dies in the middle of queueing."""


def test_lines_are_queued_in_chunks_held_from_claims_until_the_last_is_in(
    db: Database,
    clock: FakeClock,
    alice: Caller,
    node: Caller,
    queue: QueueService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batches_module, "INSERT_CHUNK", 2)
    service, batch_id = _batch(db, clock, alice, _file(LINES))
    real = service._queue_held
    chunks = {"n": 0}

    def crash_on_the_third_chunk(*args: Any) -> bool:
        chunks["n"] += 1
        if chunks["n"] == 3:
            raise CrashError
        return real(*args)

    monkeypatch.setattr(service, "_queue_held", crash_on_the_third_chunk)
    with pytest.raises(CrashError):
        service.validate(batch_id)
    held = _jobs(db, batch_id)
    assert [row.batch_line for row in held] == [1, 2, 3, 4]  # two whole chunks
    assert all(row.not_before == batches_module.HELD for row in held)
    assert _claim(queue, node) == []
    assert service.get(alice, batch_id).status == "validating"  # type: ignore[union-attr]
    # Restarted: it resumes after the chunks already in, then releases them all at once.
    service = BatchService(db, QueuePolicy(), clock=clock)
    assert service.validate(batch_id) == ["m"] * LINES
    queued = _jobs(db, batch_id)
    assert [(row.batch_line, row.custom_id) for row in queued] == [
        (n, f"c{n}") for n in range(1, LINES + 1)
    ]
    assert all(row.not_before == 0 for row in queued)
    batch = service.get(alice, batch_id)
    assert batch is not None and batch.status == "in_progress"
    assert batch.request_counts.total == LINES
    leases = _claim(queue, node)
    assert sorted(lease.request.to_payload()["messages"][0]["content"] for lease in leases) == (
        sorted(f"hi {n}" for n in range(1, LINES + 1))
    )


def test_a_bad_line_fails_the_batch_with_no_job(
    db: Database, clock: FakeClock, alice: Caller
) -> None:
    service, batch_id = _batch(db, clock, alice, _file(LINES, bad=6))
    assert service.validate(batch_id) == []
    batch = service.get(alice, batch_id)
    assert batch is not None and batch.status == "failed"
    assert batch.errors is not None and [e.line for e in batch.errors.data] == [6]
    assert batch.request_counts.total == 0
    assert _jobs(db, batch_id) == []


def test_a_nul_in_a_custom_id_fails_the_batch_on_every_backend(
    db: Database, clock: FakeClock, alice: Caller
) -> None:
    # PostgreSQL's text cannot hold a NUL: stored, it raised on every tick of the
    # batch driver, and no other batch of any user moved on.
    content = _file(LINES).replace(b'"c3"', b'"c\\u0000x"')
    service, batch_id = _batch(db, clock, alice, content)
    assert service.validate(batch_id) == []
    batch = service.get(alice, batch_id)
    assert batch is not None and batch.status == "failed" and batch.errors is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(3, "invalid_value")]
    assert _jobs(db, batch_id) == []


def test_cancelled_while_queueing_leaves_no_job(
    db: Database, clock: FakeClock, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches_module, "INSERT_CHUNK", 2)
    service, batch_id = _batch(db, clock, alice, _file(LINES))
    real = service._queue_held
    chunks = {"n": 0}

    def cancel_after_two_chunks(*args: Any) -> bool:
        chunks["n"] += 1
        if chunks["n"] == 3:
            service.cancel(alice, batch_id)
        return real(*args)

    monkeypatch.setattr(service, "_queue_held", cancel_after_two_chunks)
    assert service.validate(batch_id) == []
    batch = service.get(alice, batch_id)
    assert batch is not None and batch.status == "cancelled"
    assert _jobs(db, batch_id) == []
    with db.read() as conn:
        assert conn.execute(sa.select(batches.c.total)).scalar_one() == 0


def test_an_input_file_deleted_while_validating_fails_the_batch(
    db: Database, clock: FakeClock, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = _file(LINES)
    monkeypatch.setattr(files_module, "CHUNK_BYTES", content.index(b"\n") + 1)  # ~a line a part
    service, batch_id = _batch(db, clock, alice, content)
    store = service._files
    real_part = store.part

    def deleted_after_two_parts(seq: int, number: int) -> bytes | None:
        if number == 2:
            with db.write() as conn:
                conn.execute(file_chunks.delete().where(file_chunks.c.file_seq == seq))
        return real_part(seq, number)

    monkeypatch.setattr(store, "part", deleted_after_two_parts)
    assert service.validate(batch_id) == []
    batch = service.get(alice, batch_id)
    assert batch is not None and batch.status == "failed" and batch.errors is not None
    assert [e.code for e in batch.errors.data] == ["invalid_file"]
    assert _jobs(db, batch_id) == []


def test_a_cancel_racing_the_release_still_cancels(
    db: Database, clock: FakeClock, alice: Caller
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: the two cannot interleave")
    service, batch_id = _batch(db, clock, alice, _file(LINES))
    done: list[Any] = []
    with db.engine.connect() as release:
        # A driver's release (validating -> in_progress), not yet committed.
        release.execute(
            batches.update().where(batches.c.id == batch_id).values(status="in_progress")
        )
        cancelling = threading.Thread(target=lambda: done.append(service.cancel(alice, batch_id)))
        cancelling.start()
        deadline = time.monotonic() + 30
        while not _waiting_on_a_lock(db) and cancelling.is_alive():
            assert time.monotonic() < deadline, "the cancel never reached the batch's row"
            time.sleep(0.01)
        release.commit()
    cancelling.join(30)
    [(batch, _)] = done
    # Read before the release committed, the batch was answered as it was and
    # the cancel's move found nothing to move: all its lines would have run.
    assert batch is not None and batch.status == "cancelling"


def _waiting_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def test_validation_keeps_no_request_in_memory(
    db: Database, clock: FakeClock, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The queueing pass holds one chunk of parsed requests, never the file's."""
    monkeypatch.setattr(batches_module, "INSERT_CHUNK", 3)
    service, batch_id = _batch(db, clock, alice, _file(LINES))
    sizes: list[int] = []
    real = service._queue_held

    def record(owner: Caller, batch: str, queued: int, chunk: list[Any]) -> bool:
        sizes.append(len(chunk))
        return real(owner, batch, queued, chunk)

    monkeypatch.setattr(service, "_queue_held", record)
    service.validate(batch_id)
    assert sizes == [3, 3, 1]

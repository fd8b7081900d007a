"""A batch's life after validation, on every backend: quota at create, idempotent
creates, cancels, and finalisation that overlaps or is cut short.

See docs/openai.md, "Batches".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import (
    PURPOSE_BATCH_OUTPUT,
    FetchRequest,
    ResultOutcome,
    Role,
    SubmitRequest,
)
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import files
from openbeepboop_server.errors import IdempotencyKeyReused, QuotaExceeded
from openbeepboop_server.keys import Caller, KeyService, KeySettings
from openbeepboop_server.queue.batches import (
    BatchService,
    InputFileRefusedError,
    NotCancellableError,
)
from openbeepboop_server.queue.files import FileStore
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, completion

URL = "/v1/chat/completions"
WINDOW = 3600.0


@pytest.fixture
def db(any_db: Database) -> Database:
    """The queue folder's services (``keys``, ``queue``) on both backends."""
    return any_db


def _caller(keys: KeyService, name: str, **settings: object) -> Caller:
    key, _ = keys.create(Role.USER, name, KeySettings(**settings))  # type: ignore[arg-type]
    caller = keys.authenticate(key)
    assert caller is not None
    return caller


def _input(lines: int) -> bytes:
    rows = [
        json.dumps(
            {
                "custom_id": f"c{number}",
                "method": "POST",
                "url": URL,
                "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            }
        )
        for number in range(1, lines + 1)
    ]
    return ("\n".join(rows) + "\n").encode()


def _upload(db: Database, clock: FakeClock, owner: Caller, lines: int) -> str:
    return FileStore(db, clock).save(owner.key_id, "in.jsonl", "batch", [_input(lines)]).id


def _create(service: BatchService, owner: Caller, file_id: str, **kw: Any) -> str:
    batch = service.create(
        owner,
        input_file_id=file_id,
        endpoint=URL,
        completion_window="1h",
        window_seconds=WINDOW,
        metadata=None,
        **kw,
    )
    assert batch is not None
    return batch.id


def _running(db: Database, clock: FakeClock, owner: Caller, lines: int) -> tuple[BatchService, str]:
    """A batch of ``lines`` lines, validated: its jobs queued."""
    service = BatchService(db, QueuePolicy(), clock=clock)
    batch_id = _create(service, owner, _upload(db, clock, owner, lines))
    assert service.validate(batch_id) == ["m"] * lines
    return service, batch_id


def _run_all(queue: QueueService, node: Caller, lines: int) -> None:
    leases = queue.claim(node, FetchRequest(node_id="gpu-1", models=["m"], max_jobs=lines))
    outcomes = [
        ResultOutcome(job_id=lease.job_id, lease_token=lease.lease_token, result=completion())
        for lease in leases
    ]
    queue.deliver(node, SubmitRequest(node_id="gpu-1", outcomes=outcomes))


def _outputs(db: Database, batch_id: str) -> list[str]:
    """Ids of every stored output or error file of the batch."""
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(files.c.id).where(
                    files.c.purpose == PURPOSE_BATCH_OUTPUT,
                    files.c.filename.in_([f"{batch_id}_output.jsonl", f"{batch_id}_error.jsonl"]),
                )
            ).scalars()
        )


# -- max_queued --------------------------------------------------------------


def test_lines_of_a_validating_batch_count_against_max_queued(
    any_db: Database, clock: FakeClock, keys: KeyService
) -> None:
    owner = _caller(keys, "capped", max_queued=100)
    service = BatchService(any_db, QueuePolicy(), clock=clock)
    first = _create(service, owner, _upload(any_db, clock, owner, 60))
    with pytest.raises(QuotaExceeded, match="it has 60") as refused:
        _create(service, owner, _upload(any_db, clock, owner, 60))
    assert refused.value.code == "max_queued_exceeded"
    assert [batch.id for batch in service.list_page(owner, limit=10, after=None).data] == [first]
    # Queued (the lines are jobs now, and no longer counted twice), then cancelled: room again.
    assert len(service.validate(first)) == 60
    with pytest.raises(QuotaExceeded, match="it has 60"):
        _create(service, owner, _upload(any_db, clock, owner, 60))
    service.cancel(owner, first)
    _create(service, owner, _upload(any_db, clock, owner, 60))


def test_concurrent_creates_cannot_pass_max_queued_together(
    any_db: Database, clock: FakeClock, keys: KeyService
) -> None:
    owner = _caller(keys, "capped", max_queued=100)
    inputs = [_upload(any_db, clock, owner, 60) for _ in range(4)]
    start = threading.Barrier(len(inputs))
    outcomes: list[str] = []

    def create(file_id: str) -> None:
        service = BatchService(any_db, QueuePolicy(), clock=clock)
        start.wait()
        try:
            _create(service, owner, file_id)
            outcomes.append("created")
        except QuotaExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=create, args=(file_id,)) for file_id in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "refused", "refused", "refused"]


# -- Idempotency-Key -----------------------------------------------------------


def test_a_create_repeated_with_its_key_answers_the_first_batch(
    any_db: Database, clock: FakeClock, keys: KeyService
) -> None:
    owner = _caller(keys, "alice", max_queued=10)
    other = _caller(keys, "bob")
    service = BatchService(any_db, QueuePolicy(), clock=clock)
    file_id = _upload(any_db, clock, owner, 6)
    first = _create(service, owner, file_id, idempotency_key="k1", request_hash="h1")
    # The repeat is not a second request against the quota (6 + 6 > 10).
    assert _create(service, owner, file_id, idempotency_key="k1", request_hash="h1") == first
    assert len(service.list_page(owner, limit=10, after=None).data) == 1
    with pytest.raises(IdempotencyKeyReused):
        _create(service, owner, file_id, idempotency_key="k1", request_hash="h2")
    # Keys are per API key: another key's "k1" is its own.
    other_file = _upload(any_db, clock, other, 1)
    assert _create(service, other, other_file, idempotency_key="k1", request_hash="h1") != first


def test_concurrent_creates_with_one_key_make_one_batch(
    any_db: Database, clock: FakeClock, keys: KeyService
) -> None:
    owner = _caller(keys, "alice")
    file_id = _upload(any_db, clock, owner, 3)
    start = threading.Barrier(4)
    answers: list[str] = []

    def create() -> None:
        service = BatchService(any_db, QueuePolicy(), clock=clock)
        start.wait()
        answers.append(_create(service, owner, file_id, idempotency_key="k", request_hash="h"))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and len(set(answers)) == 1
    listed = BatchService(any_db, QueuePolicy(), clock=clock).list_page(owner, limit=10, after=None)
    assert [batch.id for batch in listed.data] == answers[:1]


# -- create refusals and cancels ---------------------------------------------


def test_an_output_file_is_refused_as_input_at_create(
    any_db: Database, clock: FakeClock, keys: KeyService, queue: QueueService
) -> None:
    owner = _caller(keys, "alice")
    node = _caller(keys, "gpu")
    node = Caller(key_id=node.key_id, key_name="gpu", role=Role.NODE)
    service, batch_id = _running(any_db, clock, owner, 2)
    _run_all(queue, node, 2)
    service.advance()
    done = service.get(owner, batch_id)
    assert done is not None and done.output_file_id is not None
    with pytest.raises(InputFileRefusedError, match="purpose 'batch_output'"):
        _create(service, owner, done.output_file_id)
    assert len(service.list_page(owner, limit=10, after=None).data) == 1


def test_a_cancel_wins_over_the_window_elapsing(
    any_db: Database, clock: FakeClock, keys: KeyService, queue: QueueService
) -> None:
    owner = _caller(keys, "alice")
    node = Caller(key_id=_caller(keys, "gpu").key_id, key_name="gpu", role=Role.NODE)
    service, batch_id = _running(any_db, clock, owner, 3)
    # One line runs and stays running, so the cancel waits for it ...
    queue.claim(node, FetchRequest(node_id="gpu-1", models=["m"], max_jobs=1))
    cancelling, _ = service.cancel(owner, batch_id)
    assert cancelling is not None and cancelling.status == "cancelling"
    # ... until the window elapses.
    clock.advance(WINDOW + 1)
    service.advance()
    ended = service.get(owner, batch_id)
    assert ended is not None and ended.status == "cancelled"
    assert ended.cancelled_at is not None and ended.expired_at is None
    assert ended.error_file_id is not None
    lines = b"".join(FileStore(any_db, clock).read_all(_stored(any_db, clock, owner, ended)))
    codes = {json.loads(line)["error"]["code"] for line in lines.splitlines()}
    assert codes == {"batch_cancelled"}


def _stored(db: Database, clock: FakeClock, owner: Caller, batch: Any) -> Any:
    stored = FileStore(db, clock).find(owner, batch.error_file_id)
    assert stored is not None
    return stored


def test_cancelling_a_batch_that_ended_is_refused_and_a_repeated_cancel_is_answered(
    any_db: Database, clock: FakeClock, keys: KeyService, queue: QueueService
) -> None:
    owner = _caller(keys, "alice")
    node = Caller(key_id=_caller(keys, "gpu").key_id, key_name="gpu", role=Role.NODE)
    service, done = _running(any_db, clock, owner, 1)
    _run_all(queue, node, 1)
    service.advance()
    with pytest.raises(NotCancellableError, match="is completed"):
        service.cancel(owner, done)
    assert service.get(owner, done).status == "completed"  # type: ignore[union-attr]
    _, cancelled = _running(any_db, clock, owner, 1)
    service.cancel(owner, cancelled)
    service.advance()
    again, jobs = service.cancel(owner, cancelled)
    assert again is not None and again.status == "cancelled" and jobs == []


# -- finalisation --------------------------------------------------------------


def _finished(
    any_db: Database, clock: FakeClock, keys: KeyService, queue: QueueService
) -> tuple[Caller, str]:
    """A batch whose every line ended: one line succeeded, one was cancelled."""
    owner = _caller(keys, "alice")
    node = Caller(key_id=_caller(keys, "gpu").key_id, key_name="gpu", role=Role.NODE)
    service, batch_id = _running(any_db, clock, owner, 2)
    lease = queue.claim(node, FetchRequest(node_id="gpu-1", models=["m"], max_jobs=1))
    service.cancel(owner, batch_id)
    outcome = ResultOutcome(
        job_id=lease[0].job_id, lease_token=lease[0].lease_token, result=completion()
    )
    queue.deliver(node, SubmitRequest(node_id="gpu-1", outcomes=[outcome]))
    return owner, batch_id


def _assert_one_of_each(db: Database, clock: FakeClock, owner: Caller, batch_id: str) -> None:
    ended = BatchService(db, QueuePolicy(), clock=clock).get(owner, batch_id)
    assert ended is not None and ended.status == "cancelled"
    assert ended.output_file_id is not None and ended.error_file_id is not None
    assert sorted(_outputs(db, batch_id)) == sorted([ended.output_file_id, ended.error_file_id])


def test_two_drivers_finalising_at_once_leave_one_output_and_one_error_file(
    any_db: Database,
    clock: FakeClock,
    keys: KeyService,
    queue: QueueService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner, batch_id = _finished(any_db, clock, keys, queue)
    first = BatchService(any_db, QueuePolicy(), clock=clock)
    second = BatchService(any_db, QueuePolicy(), clock=clock)
    real_store: Callable[..., str] = first._store
    stored = {"n": 0}

    def store_then_let_the_other_replica_finish(*args: Any) -> str:
        # The first replica stored its files; meanwhile the second finalises the batch whole.
        file_id = real_store(*args)
        stored["n"] += 1
        if stored["n"] == 2:
            assert second.advance().ended == [batch_id]
        return file_id

    monkeypatch.setattr(first, "_store", store_then_let_the_other_replica_finish)
    assert first.advance().ended == []  # it lost the move
    _assert_one_of_each(any_db, clock, owner, batch_id)


def test_a_finalisation_cut_short_after_storing_its_files_leaves_no_orphan(
    any_db: Database,
    clock: FakeClock,
    keys: KeyService,
    queue: QueueService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner, batch_id = _finished(any_db, clock, keys, queue)
    crashed = BatchService(any_db, QueuePolicy(), clock=clock)

    def killed_before_the_move(*args: Any, **values: Any) -> bool:
        if args[3] == "cancelled":
            raise KeyboardInterrupt  # the process dies between storing and the status move
        return BatchService._move(*args, **values)

    monkeypatch.setattr(crashed, "_move", killed_before_the_move)
    with pytest.raises(KeyboardInterrupt):
        crashed.advance()
    assert len(_outputs(any_db, batch_id)) == 2  # stored, not recorded: still finalizing
    # Restarted: it finalises again and keeps only the files it records.
    assert BatchService(any_db, QueuePolicy(), clock=clock).advance().ended == [batch_id]
    _assert_one_of_each(any_db, clock, owner, batch_id)


def test_blank_lines_do_not_count_against_max_queued(
    any_db: Database, clock: FakeClock, keys: KeyService
) -> None:
    """A file of 10 requests and a trailing blank line is a file of 10 requests."""
    owner = _caller(keys, "exact", max_queued=10)
    service = BatchService(any_db, QueuePolicy(), clock=clock)
    padded = FileStore(any_db, clock).save(
        owner.key_id, "in.jsonl", "batch", [_input(10) + b"\n  \n"]
    )
    batch_id = _create(service, owner, padded.id)
    assert len(service.validate(batch_id)) == 10


# -- retention ---------------------------------------------------------------


def test_retention_keeps_a_running_batchs_finished_jobs_until_its_output_is_written(
    any_db: Database, clock: FakeClock, keys: KeyService
) -> None:
    # QA round 11: a retention shorter than a batch's run purged its finished
    # lines, and the batch "completed" with most answers missing.
    queue = QueueService(any_db, QueuePolicy(retention_days=0.01), clock=clock)  # 864 s < WINDOW
    owner = _caller(keys, "alice")
    node = Caller(key_id=_caller(keys, "gpu").key_id, key_name="gpu", role=Role.NODE)
    service, batch_id = _running(any_db, clock, owner, 2)
    _run_all(queue, node, 1)  # the first line finished
    native = queue.submit(owner, chat_request(model="m"))
    queue.cancel(owner, native.id)
    clock.advance(864 + 1)
    assert queue.purge_finished() == 1  # the native job only
    _run_all(queue, node, 1)
    assert service.advance().ended == [batch_id]
    ended = service.get(owner, batch_id)
    assert ended is not None and ended.status == "completed"
    assert ended.request_counts.completed == 2 and ended.output_file_id is not None
    stored = FileStore(any_db, clock).find(owner, ended.output_file_id)
    assert stored is not None
    output = b"".join(FileStore(any_db, clock).read_all(stored)).splitlines()
    assert [json.loads(line)["custom_id"] for line in output] == ["c1", "c2"]
    # Ended: retention applies to its jobs as to any job.
    clock.advance(864 + 1)
    assert queue.purge_finished() == 2

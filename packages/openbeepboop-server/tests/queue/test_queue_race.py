"""Atomic claims under contention: threads, and processes each with its own Database.

1,000 jobs, many fetchers: every job is claimed exactly once. Runs on SQLite
(file in tmp_path) and on PostgreSQL (skipped if absent).
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from typing import Any

import pytest
from openbeepboop_schemas import FetchRequest, ResultOutcome, Role, SubmitRequest
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import chat_request, completion, make_caller

JOBS = 1_000
WORKERS = 4
TIMEOUT = 240.0


def _drain(
    url: str,
    caller: Caller,
    node_id: str,
    seed: int,
    go: Callable[[], object],
    claimed_once: Callable[[], object],
) -> list[str]:
    """Claim (and complete) until the queue is empty; the job ids this fetcher got.

    The database is opened and a first (empty) claim made before ``go``
    returns (the start barrier), and ``claimed_once`` (a second barrier) is
    passed after the first claim that got jobs: SQLite's busy handler is
    unfair (a waiting connection sleeps longer each time while the one
    holding the lock takes it again at once), so on a fast machine one
    fetcher could otherwise drain all 1,000 jobs alone and race no one.
    """
    db = Database.connect(url)
    queue = QueueService(db, QueuePolicy())
    rng = random.Random(seed)
    got: list[str] = []
    empty = 0
    try:
        assert queue.claim(caller, FetchRequest(node_id=node_id, models=["no-such-model"])) == []
        go()
        while empty < 3:
            leases = queue.claim(
                caller, FetchRequest(node_id=node_id, models=["*"], max_jobs=rng.randint(1, 24))
            )
            if not leases:
                empty += 1
                continue
            empty = 0
            if not got:
                claimed_once()
            got.extend(lease.job_id for lease in leases)
            outcomes = [
                ResultOutcome(
                    job_id=lease.job_id, lease_token=lease.lease_token, result=completion()
                )
                for lease in leases
            ]
            acks = queue.deliver(caller, SubmitRequest(node_id=node_id, outcomes=outcomes)).acks
            assert {ack.ack for ack in acks} == {"accepted"}
    finally:
        db.dispose()
    return got


_START: Any = None
_CLAIMED: Any = None


def _init_fetcher(start: Any, claimed: Any) -> None:
    """Runs once in each pooled process: keep the shared barriers."""
    global _START, _CLAIMED
    _START, _CLAIMED = start, claimed


def _process_fetcher(url: str, caller: dict[str, Any], node_id: str) -> list[str]:
    """One fetcher, in a pooled process (spawned: it shares nothing with the test)."""
    # All fetchers go at once, each connected and warmed up.
    return _drain(
        url,
        Caller(**caller),
        node_id,
        sum(map(ord, node_id)),
        lambda: _START.wait(TIMEOUT),
        lambda: _CLAIMED.wait(TIMEOUT),
    )


@pytest.fixture(scope="module")
def fetcher_pool() -> Iterator[ProcessPoolExecutor]:
    """WORKERS spawned processes, shared by the SQLite and PostgreSQL runs (start-up is slow)."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=WORKERS,
        mp_context=context,
        initializer=_init_fetcher,
        initargs=(context.Barrier(WORKERS), context.Barrier(WORKERS)),
    )
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


def _setup(url: str) -> tuple[Caller, list[str]]:
    upgrade_to_head(url)
    db = Database.connect(url)
    try:
        keys = KeyService(db)
        user = make_caller(keys, Role.USER, "user")
        node = make_caller(keys, Role.NODE, "node")
        queue = QueueService(db, QueuePolicy())
        models = ["a", "b", "c"]
        created = queue.submit_many(user, [chat_request(model=models[i % 3]) for i in range(JOBS)])
    finally:
        db.dispose()
    return node, [job.id for job in created]


def _check(created: list[str], claimed: list[list[str]], url: str) -> None:
    everything = [job_id for got in claimed for job_id in got]
    duplicates = [job_id for job_id, n in Counter(everything).items() if n > 1]
    assert duplicates == []
    assert sorted(everything) == sorted(created)
    # Every fetcher actually took part.
    assert all(claimed)
    db = Database.connect(url)
    try:
        depth = QueueService(db, QueuePolicy()).queue_depth()
    finally:
        db.dispose()
    assert {(status, count) for status, _, count in depth} <= {
        ("COMPLETED", c) for c in range(JOBS + 1)
    }
    assert sum(count for _, _, count in depth) == JOBS


def test_concurrent_threads_never_claim_a_job_twice(backend_url: str) -> None:
    node, created = _setup(backend_url)
    start = threading.Barrier(WORKERS)
    claimed_once = threading.Barrier(WORKERS)
    claimed: list[list[str]] = [[] for _ in range(WORKERS)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            claimed[i] = _drain(
                backend_url,
                node,
                f"thread-{i}",
                i,
                lambda: start.wait(timeout=TIMEOUT),
                lambda: claimed_once.wait(timeout=TIMEOUT),
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    _check(created, claimed, backend_url)


def test_concurrent_processes_never_claim_a_job_twice(
    backend_url: str, fetcher_pool: ProcessPoolExecutor
) -> None:
    node, created = _setup(backend_url)
    futures = [
        fetcher_pool.submit(_process_fetcher, backend_url, asdict(node), f"proc-{i}")
        for i in range(WORKERS)
    ]
    claimed = [future.result(timeout=TIMEOUT) for future in futures]
    _check(created, claimed, backend_url)


def test_claims_for_different_models_do_not_interfere(backend_url: str) -> None:
    node, created = _setup(backend_url)
    db = Database.connect(backend_url)
    try:
        queue = QueueService(db, QueuePolicy())
        by_model: dict[str, list[str]] = {}
        for model in ("a", "b", "c"):
            got: list[str] = []
            while leases := queue.claim(
                node, FetchRequest(node_id=model, models=[model], max_jobs=100)
            ):
                assert {lease.model for lease in leases} == {model}
                got.extend(lease.job_id for lease in leases)
            by_model[model] = got
    finally:
        db.dispose()
    assert sorted(job for got in by_model.values() for job in got) == sorted(created)
    assert by_model["a"] == created[0::3] and by_model["b"] == created[1::3]


def test_concurrent_submits_with_one_idempotency_key_make_one_job(backend_url: str) -> None:
    upgrade_to_head(backend_url)
    db = Database.connect(backend_url)
    try:
        user = make_caller(KeyService(db), Role.USER, "user")
        queue = QueueService(db, QueuePolicy())
        start = threading.Barrier(WORKERS * 2)
        answers: list[str] = []
        errors: list[BaseException] = []

        def submit() -> None:
            try:
                start.wait(timeout=TIMEOUT)
                answers.append(queue.submit(user, chat_request(), idempotency_key="same").id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(WORKERS * 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        assert errors == []
        assert len(answers) == WORKERS * 2 and len(set(answers)) == 1
        assert [count for _, _, count in queue.queue_depth()] == [1]
    finally:
        db.dispose()


def test_the_same_result_delivered_twice_at_once_is_accepted_once(backend_url: str) -> None:
    node, _created = _setup(backend_url)
    db = Database.connect(backend_url)
    try:
        queue = QueueService(db, QueuePolicy())
        leases = queue.claim(node, FetchRequest(node_id="n", models=["*"], max_jobs=50))
        submit = SubmitRequest(
            node_id="n",
            outcomes=[
                ResultOutcome(
                    job_id=lease.job_id, lease_token=lease.lease_token, result=completion()
                )
                for lease in leases
            ],
        )
        start = threading.Barrier(WORKERS)
        acks: list[list[str]] = []
        errors: list[BaseException] = []

        def deliver() -> None:
            try:
                start.wait(timeout=TIMEOUT)
                acks.append([ack.ack for ack in queue.deliver(node, submit).acks])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=deliver) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
        assert errors == []
        for position in range(len(leases)):
            answers = sorted(answer[position] for answer in acks)
            assert answers == ["accepted"] + ["duplicate"] * (WORKERS - 1)
    finally:
        db.dispose()

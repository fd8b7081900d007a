"""A ``*`` claim's cost does not follow the number of distinct models queued.

See docs/server-internals.md, "Claiming". One USER key queueing 60,000
invented model names made every ``*`` claim walk them all (2.3-4 s each on
SQLite, 6 s on PostgreSQL with 20,000), holding the writer meanwhile.
"""

from __future__ import annotations

import pytest
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue import fair_claim
from openbeepboop_server.queue.service import QueueService

from tests.support.core import chat_request, make_caller

#: Distinct models one key queues: far more than a ``*`` claim may look at.
MANY = 3_000


@pytest.fixture
def db(any_db: Database) -> Database:
    """The queue folder's services (``keys``, ``queue``) on both backends."""
    return any_db


@pytest.fixture
def ordered(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The models each claim put in fair order (what its cost follows)."""
    calls: list[list[str]] = []
    heads = fair_claim._heads

    def spy(conn: object, models: list[str], now: float, pooled: bool) -> object:
        calls.append(list(models))
        return heads(conn, models, now, pooled)  # type: ignore[arg-type]

    monkeypatch.setattr(fair_claim, "_heads", spy)
    return calls


def _flood(queue: QueueService, owner: Caller, count: int) -> None:
    for start in range(0, count, 1_000):
        names = range(start, min(count, start + 1_000))
        queue.submit_many(owner, [chat_request(model=f"made-up-{i:05d}") for i in names])


def test_a_star_claim_looks_at_a_bounded_number_of_models(
    queue: QueueService, keys: KeyService, ordered: list[list[str]]
) -> None:
    flood = make_caller(keys, Role.USER, "flood")
    alice = make_caller(keys, Role.USER, "alice")
    node = make_caller(keys, Role.NODE, "node")
    _flood(queue, flood, MANY)
    queue.submit(alice, chat_request(model="zz-llama3"))
    leases = queue.claim(node, FetchRequest(node_id="star", models=["*"], max_jobs=8))
    assert len(leases) == 8
    (models,) = ordered
    assert len(models) <= fair_claim.MAX_ANY_MODELS
    # Every owner with queued work is looked at, however many models another has.
    assert "zz-llama3" in models


def test_star_claims_still_drain_every_model(queue: QueueService, keys: KeyService) -> None:
    owners = [make_caller(keys, Role.USER, name) for name in ("a", "b")]
    count = 3 * fair_claim.MAX_ANY_MODELS
    for owner in owners:
        _flood(queue, owner, count)
    node = make_caller(keys, Role.NODE, "node")
    claimed: set[str] = set()
    for _ in range(4 * count):  # a safety net: each claim takes at least one job
        leases = queue.claim(node, FetchRequest(node_id="star", models=["*"], max_jobs=256))
        if not leases:
            break
        claimed.update(lease.job_id for lease in leases)
    assert len(claimed) == 2 * count

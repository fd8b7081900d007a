"""Fair share across models (docs/api.md, "Claim order"): a claim over several
models counts an owner's turns once, whatever model names its jobs carry.

A ``*`` node shared its claims per (model, owner): a key spreading its jobs
over 50 models took 50 turns to another key's one, and when every key queued
its own models the node drained the keys one after another, oldest first.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.fair_share import POOLED, Head, Turns
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, make_caller
from tests.support.turns import take_turns

NOW = 1_700_000_000.0
AGING = 600.0


def _take(turns: Turns, ranks: dict[tuple[str, int], list[float]], count: int) -> list[int]:
    """The owners of ``count`` jobs taken, each (model, owner) in rank order, as a claim does."""
    return [owner for _, owner in take_turns(turns, ranks, count)]


def _spread(
    owners: int, models: int, jobs: int, weights: dict[int, int] | None = None
) -> tuple[list[Head], dict[tuple[str, int], list[float]]]:
    """Each owner's ``jobs`` jobs of each of its own ``models`` models, older owners first."""
    heads: list[Head] = []
    ranks: dict[tuple[str, int], list[float]] = {}
    for owner in range(owners):
        for index in range(models):
            model = f"o{owner}-m{index}"
            own = [NOW - 1000 + owner * 100 + index + job / 10 for job in range(jobs)]
            weight = (weights or {}).get(owner, 1)
            heads.append(Head(model, owner, own[0], 0, weight, None))
            ranks[(model, owner)] = own
    return heads, ranks


def test_owners_take_turns_across_their_models() -> None:
    heads, ranks = _spread(owners=10, models=50, jobs=2)
    taken = _take(Turns(heads, now=NOW, aging_seconds=AGING, pooled=True), ranks, 300)
    for start in range(0, 300, 10):
        assert sorted(taken[start : start + 10]) == list(range(10)), start


def test_weights_hold_across_models() -> None:
    heads, ranks = _spread(owners=2, models=20, jobs=3, weights={1: 3})
    taken = _take(Turns(heads, now=NOW, aging_seconds=AGING, pooled=True), ranks, 40)
    assert Counter(taken) == {1: 30, 0: 10}


def test_keeping_only_the_first_owners_changes_no_pooled_pick() -> None:
    """``picks`` keeps whole owners: one owner's many models cannot crowd out the next owner."""
    rng = random.Random(11)
    for _ in range(200):
        heads: list[Head] = []
        ranks: dict[tuple[str, int], list[float]] = {}
        for owner in range(rng.randint(1, 12)):
            stored = rng.choice([None, rng.uniform(0, 5)])
            weight = rng.choice([1, 1, 2, 3])
            for model in rng.sample("abcdefgh", rng.randint(1, 6)):
                own = sorted(NOW - rng.uniform(-1200, 3600) for _ in range(rng.randint(1, 4)))
                priority = rng.choice([0, 0, 0, 1, -1])
                heads.append(Head(model, owner, own[0], priority, weight, stored))
                ranks[(model, owner)] = own
        count = rng.randint(1, 20)
        whole = Turns(heads, now=NOW, aging_seconds=AGING, pooled=True)
        few = Turns(heads, now=NOW, aging_seconds=AGING, picks=count, pooled=True)
        expected = _take(whole, {k: list(v) for k, v in ranks.items()}, count)
        assert _take(few, {k: list(v) for k, v in ranks.items()}, count) == expected
        assert few.advances() == whole.advances()


def test_pooled_turns_are_stored_under_the_pooled_row() -> None:
    heads, ranks = _spread(owners=2, models=3, jobs=1)
    turns = Turns(heads, now=NOW, aging_seconds=AGING, pooled=True)
    _take(turns, ranks, 4)
    assert turns.advances() == [(POOLED, 0, 0.0, 2.0), (POOLED, 1, 0.0, 2.0)]


@pytest.fixture
def db(any_db: Database) -> Database:
    """The queue folder's services (``keys``, ``queue``) on both backends."""
    return any_db


@pytest.fixture
def policy() -> QueuePolicy:
    return QueuePolicy(priority_aging_seconds=AGING)


def _owners(db: Database, ids: list[str]) -> list[str]:
    """The owning key's name of each job id, in order."""
    sql = sa.text(
        "SELECT jobs.id, api_keys.name FROM jobs JOIN api_keys"
        " ON api_keys.id = jobs.owner_key_id WHERE jobs.id IN :ids"
    ).bindparams(sa.bindparam("ids", expanding=True))
    with db.read() as conn:
        names = dict(conn.execute(sql, {"ids": ids}).all())
    return [names[job_id] for job_id in ids]


def _one_by_one(queue: QueueService, node: Caller, models: list[str], count: int) -> list[str]:
    """``count`` one-job claims, as a node at concurrency 1 makes them."""
    fetch = FetchRequest(node_id="n1", models=models, max_jobs=1)
    return [queue.claim(node, fetch)[0].job_id for _ in range(count)]


def test_a_star_node_serves_every_key_in_each_round(
    queue: QueueService, keys: KeyService, clock: FakeClock, db: Database
) -> None:
    """The QA scenario: 10 keys x 50 models x 2 jobs, a ``*`` node claiming one at a time."""
    names = [f"u{i:02d}" for i in range(10)]
    for name in names:
        owner = make_caller(keys, Role.USER, name)
        clock.advance(0.001)
        requests = [chat_request(model=f"{name}-m{m}") for m in range(50) for _ in range(2)]
        queue.submit_many(owner, requests)
    node = make_caller(keys, Role.NODE, "node")
    served = _owners(db, _one_by_one(queue, node, ["*"], 200))
    for start in range(0, 200, 10):
        assert sorted(served[start : start + 10]) == names, start


def test_a_node_declaring_several_models_counts_an_owner_once(
    queue: QueueService, keys: KeyService, clock: FakeClock, db: Database
) -> None:
    alice = make_caller(keys, Role.USER, "alice")
    bob = make_caller(keys, Role.USER, "bob")
    spread = [f"a{m}" for m in range(10)]
    queue.submit_many(alice, [chat_request(model=model) for model in spread for _ in range(3)])
    clock.advance(0.001)
    queue.submit_many(bob, [chat_request(model="b")] * 30)
    node = make_caller(keys, Role.NODE, "node")
    served = _owners(db, _one_by_one(queue, node, [*spread, "b"], 20))
    assert served == ["alice", "bob"] * 10
    # One fetch of several jobs interleaves them the same way.
    fetch = FetchRequest(node_id="n1", models=[*spread, "b"], max_jobs=8)
    batch = _owners(db, [lease.job_id for lease in queue.claim(node, fetch)])
    assert Counter(batch) == {"alice": 4, "bob": 4}

"""The claim order (docs/api.md, "Claim order"): priority levels, then fair share
between owners (weighted round-robin), then each owner's oldest job.

Every test runs on SQLite and on PostgreSQL (skipped there if absent); the
last ones race claimers on one database.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.errors import PriorityAboveCeiling
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, chat_request, make_caller, migrated_database

AGING = 600.0


@pytest.fixture
def database(backend_url: str) -> Iterator[Database]:
    """A migrated database, once on SQLite and once on PostgreSQL."""
    db = migrated_database(backend_url)
    yield db
    db.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys(database: Database, clock: FakeClock) -> KeyService:
    return KeyService(database, clock=clock)


@pytest.fixture
def queue(database: Database, clock: FakeClock) -> QueueService:
    return QueueService(database, QueuePolicy(priority_aging_seconds=AGING), clock=clock)


@pytest.fixture
def users(keys: KeyService) -> dict[str, Caller]:
    """Three USER keys; ``vip`` may submit up to priority 5."""
    found = {name: make_caller(keys, Role.USER, name) for name in ("alice", "bob", "vip")}
    keys.update_share("vip", max_priority=5)
    return found


@pytest.fixture
def node(keys: KeyService) -> Caller:
    return make_caller(keys, Role.NODE, "node")


def submit(
    queue: QueueService, clock: FakeClock, caller: Caller, count: int, **extra: object
) -> list[str]:
    """``count`` jobs of ``caller`` in one bulk submit, a clock tick after the previous one."""
    clock.advance(0.001)
    return [job.id for job in queue.submit_many(caller, [chat_request(**extra)] * count)]


def owners_of(database: Database, ids: list[str]) -> list[str]:
    """The owning key's name of each job id, in order."""
    with database.read() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT jobs.id, api_keys.name FROM jobs JOIN api_keys"
                " ON api_keys.id = jobs.owner_key_id WHERE jobs.id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": ids},
        ).all()
    names = dict(rows)
    return [names[job_id] for job_id in ids]


def claim(
    queue: QueueService, node: Caller, max_jobs: int, models: list[str] | None = None
) -> list[str]:
    fetch = FetchRequest(node_id="n1", models=models or ["llama3"], max_jobs=max_jobs)
    return [lease.job_id for lease in queue.claim(node, fetch)]


def test_owners_take_turns_within_one_fetch(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    database: Database,
) -> None:
    first = submit(queue, clock, users["alice"], 100)
    late = submit(queue, clock, users["bob"], 3)
    claimed = claim(queue, node, 10)
    assert owners_of(database, claimed) == ["alice", "bob"] * 3 + ["alice"] * 4
    # Each owner's jobs come oldest first.
    assert [job for job in claimed if job in late] == late
    assert [job for job in claimed if job in first] == first[:7]


def test_turns_carry_across_fetches(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    database: Database,
) -> None:
    """One job per fetch (a node at concurrency 1) still alternates: the turns are stored."""
    submit(queue, clock, users["alice"], 20)
    submit(queue, clock, users["bob"], 20)
    claimed = [claim(queue, node, 1)[0] for _ in range(8)]
    assert owners_of(database, claimed) == ["alice", "bob"] * 4


def test_a_late_small_submitter_waits_its_turns_not_the_backlog(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    database: Database,
) -> None:
    submit(queue, clock, users["alice"], 300)
    served = [claim(queue, node, 1)[0] for _ in range(50)]
    clock.advance(2 * 3600)  # alice's backlog is old now: age alone must not put it first
    late = submit(queue, clock, users["bob"], 20)
    following: list[str] = []
    while not set(late) <= set(following):
        following.extend(claim(queue, node, 4))
        assert len(following) <= 44, "bob waited more than about 20 turns"
    # No banked credit either: bob did not take a burst of turns on arrival.
    assert owners_of(database, following[:6]).count("bob") == 3
    assert owners_of(database, served) == ["alice"] * 50


def test_weights_share_claims_three_to_one(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    keys: KeyService,
    database: Database,
) -> None:
    keys.update_share("alice", weight=3)
    submit(queue, clock, users["alice"], 100)
    submit(queue, clock, users["bob"], 100)
    claimed = claim(queue, node, 40)
    for start in range(0, 40, 8):
        window = Counter(owners_of(database, claimed[start : start + 8]))
        assert window == {"alice": 6, "bob": 2}, (start, window)


def test_a_priority_job_submitted_last_is_claimed_next(
    queue: QueueService, clock: FakeClock, users: dict[str, Caller], node: Caller
) -> None:
    submit(queue, clock, users["alice"], 250)
    submit(queue, clock, users["vip"], 250)
    (urgent,) = submit(queue, clock, users["vip"], 1, priority=5)
    assert claim(queue, node, 1) == [urgent]


def test_fair_share_applies_within_a_priority_level(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    keys: KeyService,
    database: Database,
) -> None:
    keys.update_share("alice", max_priority=2)
    submit(queue, clock, users["bob"], 10)
    submit(queue, clock, users["alice"], 3, priority=2)
    submit(queue, clock, users["vip"], 3, priority=2)
    claimed = claim(queue, node, 8)
    assert owners_of(database, claimed) == ["alice", "vip"] * 3 + ["bob"] * 2


def test_a_low_priority_job_ages_into_the_turns(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    database: Database,
) -> None:
    (background,) = submit(queue, clock, users["alice"], 1, priority=-1)
    submit(queue, clock, users["bob"], 50)
    assert background not in claim(queue, node, 5)
    clock.advance(AGING + 1)  # one step of waiting lifts -1 to the top level, 0
    assert background in claim(queue, node, 2)


def test_lower_priorities_wait_for_higher_ones(
    queue: QueueService, clock: FakeClock, users: dict[str, Caller], node: Caller
) -> None:
    ordinary = submit(queue, clock, users["alice"], 3)
    (later,) = submit(queue, clock, users["alice"], 1, priority=-2)
    (sooner,) = submit(queue, clock, users["vip"], 1, priority=-1)
    assert claim(queue, node, 5) == [*ordinary, sooner, later]


def test_a_priority_above_the_ceiling_stores_nothing(
    queue: QueueService, clock: FakeClock, users: dict[str, Caller], database: Database
) -> None:
    with pytest.raises(PriorityAboveCeiling, match="max_priority of 0"):
        queue.submit(users["alice"], chat_request(priority=1))
    with pytest.raises(PriorityAboveCeiling, match="max_priority of 5"):
        queue.submit_many(users["vip"], [chat_request(priority=5), chat_request(priority=6)])
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 0
    assert queue.submit(users["vip"], chat_request(priority=5)).status == "QUEUED"


def test_the_node_never_sees_the_priority(
    queue: QueueService, clock: FakeClock, users: dict[str, Caller], node: Caller
) -> None:
    queue.submit(users["vip"], chat_request(priority=3, temperature=0.5))
    (lease,) = queue.claim(node, FetchRequest(node_id="n1", models=["*"]))
    assert "priority" not in lease.request.to_payload()
    assert lease.request.to_payload()["temperature"] == 0.5


def test_every_model_of_a_fetch_is_fair(
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    database: Database,
) -> None:
    for model in ("a", "b"):
        submit(queue, clock, users["alice"], 20, model=model)
        submit(queue, clock, users["bob"], 6, model=model)
    for models in (["*"], ["a", "b"]):
        claimed = claim(queue, node, 6, models)
        assert Counter(owners_of(database, claimed)) == {"alice": 3, "bob": 3}, models


def test_concurrent_claimers_share_owners_and_never_double_claim(
    backend_url: str,
    queue: QueueService,
    clock: FakeClock,
    users: dict[str, Caller],
    node: Caller,
    database: Database,
) -> None:
    """Four claimers, each with its own connection pool, drain five owners' jobs."""
    owners = [users["alice"], users["bob"], users["vip"]]
    created = [job for owner in owners for job in submit(queue, clock, owner, 120)]
    claimed: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def run(index: int) -> None:
        db = Database.connect(backend_url)
        try:
            mine = QueueService(db, QueuePolicy(priority_aging_seconds=AGING), clock=clock)
            start.wait(timeout=60)
            while batch := claim(mine, node, 7):
                claimed[index].extend(batch)
                # Every fetch interleaves the owners while all three have jobs.
                if len(batch) == 7 and len(claimed[index]) < 60:
                    assert len(set(owners_of(db, batch))) == 3, owners_of(db, batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    everything = [job for batch in claimed for job in batch]
    assert Counter(everything).most_common(1)[0][1] == 1
    assert sorted(everything) == sorted(created)

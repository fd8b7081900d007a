"""One live owner per ``node_id``, however many replicas (scopes.py, nodes.py).

Two NODE keys acting under one id at the same instant, each through its own
replica: exactly one of them gets it. And a replica whose registry writes
are skipped for a node it wrote recently (``NodeRecorder``) never lets that
node's key go on acting under the id once another key has taken it on
another replica. Each runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from openbeepboop_schemas import FetchRequest, HeartbeatRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.tables import nodes
from openbeepboop_server.errors import NodeIdTaken
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.nodes import NODE_RECORD_SECONDS
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import FakeClock, make_caller, migrated_database

NODE_ID = "box"
#: Bounds every wait of the race, so a broken run fails instead of hanging.
RACE_TIMEOUT = 60.0


def fetch(node_id: str = NODE_ID) -> FetchRequest:
    return FetchRequest(node_id=node_id, models=["m"])


def holder(db: Database, node_id: str = NODE_ID) -> str:
    with db.read() as conn:
        return str(
            conn.execute(sa.select(nodes.c.key_name).where(nodes.c.node_id == node_id)).scalar()
        )


@pytest.fixture
def replicas(backend_url: str) -> Iterator[tuple[Database, Database]]:
    """Two connections to one database, as two server processes have."""
    first = migrated_database(backend_url)
    second = Database.connect(backend_url)
    yield first, second
    second.dispose()
    first.dispose()


@contextlib.contextmanager
def holding_before_registry_writes(db: Database, barrier: threading.Barrier) -> Iterator[None]:
    """Make each thread writing through ``db`` wait at its first statement writing the
    registry until the other thread has reached its own: both have done all they
    read before either writes."""
    arrived: set[int] = set()

    def hold(*args: Any) -> None:
        statement: str = args[2]
        if not statement.lstrip().startswith(("UPDATE nodes", "INSERT INTO nodes")):
            return
        if threading.get_ident() not in arrived:
            arrived.add(threading.get_ident())
            barrier.wait()

    sa.event.listen(db.engine, "before_cursor_execute", hold)
    try:
        yield
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", hold)


def test_two_keys_racing_for_one_node_id_on_two_replicas_one_gets_it(
    replicas: tuple[Database, Database],
) -> None:
    clock = FakeClock()
    first = replicas[0]
    keys = KeyService(first, clock=clock)
    callers = [make_caller(keys, Role.NODE, "key-a"), make_caller(keys, Role.NODE, "key-b")]
    services = [QueueService(db, QueuePolicy(), clock=clock) for db in replicas]
    barrier = threading.Barrier(2, timeout=RACE_TIMEOUT)
    holds = contextlib.ExitStack()
    if first.is_sqlite:
        # Every write begins IMMEDIATE, taking the file's one write lock before it
        # reads: two transactions cannot both be between reading and writing, so
        # holding one there would hold the other out of its transaction for good.
        # Both start at once and the lock decides.
        start = barrier.wait
    else:
        # READ COMMITTED and a connection each: force the worst interleaving.
        for db in replicas:
            holds.enter_context(holding_before_registry_writes(db, barrier))

        def start() -> None:
            pass

    outcomes: dict[str, BaseException | None] = {}

    def act(service: QueueService, caller: Caller) -> None:
        try:
            start()
            service.claim(caller, fetch())
            outcomes[caller.key_name] = None
        except BaseException as exc:  # collected: the assertions show it
            outcomes[caller.key_name] = exc

    threads = [
        threading.Thread(target=act, args=pair) for pair in zip(services, callers, strict=True)
    ]
    with holds:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(RACE_TIMEOUT)
    assert len(outcomes) == 2, outcomes
    winners = [name for name, exc in outcomes.items() if exc is None]
    losers = [exc for exc in outcomes.values() if exc is not None]
    assert len(winners) == 1, outcomes
    assert len(losers) == 1 and isinstance(losers[0], NodeIdTaken), outcomes
    (winner,) = winners
    assert holder(first) == winner
    # Past the registry's skip window both come back, each on its replica: still the winner's.
    clock.advance(NODE_RECORD_SECONDS + 1)
    for service, caller in zip(services, callers, strict=True):
        if caller.key_name == winner:
            service.claim(caller, fetch())
        else:
            with pytest.raises(NodeIdTaken):
                service.claim(caller, fetch())
    assert holder(first) == winner


@pytest.mark.parametrize("seen_seconds", [60.0, NODE_RECORD_SECONDS / 2])
def test_a_replica_that_recorded_a_node_sees_another_key_take_its_id_elsewhere(
    any_db: Database, seen_seconds: float
) -> None:
    clock = FakeClock()
    policy = QueuePolicy(node_seen_seconds=seen_seconds)
    keys = KeyService(any_db, clock=clock)
    key_a, key_b = make_caller(keys, Role.NODE, "key-a"), make_caller(keys, Role.NODE, "key-b")
    # Two replicas, each with its own memory of the registry rows it wrote.
    one, two = (QueueService(any_db, policy, clock=clock) for _ in range(2))
    one.claim(key_a, fetch())
    with pytest.raises(NodeIdTaken):
        two.claim(key_b, fetch())  # key-a's node is live
    # key-a's node goes silent past the window; key-b takes the id on the other replica.
    clock.advance(seen_seconds * 1.2)
    two.claim(key_b, fetch())
    assert holder(any_db) == "key-b"
    # key-a's node comes back to the replica that remembers writing its row:
    # within the registry's skip window when the window is shorter than it.
    clock.advance(seen_seconds * 0.1)
    with pytest.raises(NodeIdTaken):
        one.claim(key_a, fetch())
    with pytest.raises(NodeIdTaken):
        one.heartbeat(key_a, HeartbeatRequest(node_id=NODE_ID, leases=[]))
    assert holder(any_db) == "key-b"
    two.claim(key_b, fetch())


def test_a_node_key_may_take_an_id_an_admin_acted_under(any_db: Database) -> None:
    clock = FakeClock()
    keys = KeyService(any_db, clock=clock)
    admin, node = make_caller(keys, Role.ADMIN, "root"), make_caller(keys, Role.NODE, "key-a")
    queue = QueueService(any_db, QueuePolicy(), clock=clock)
    queue.claim(admin, fetch())  # an ADMIN acts for any node and owns no id
    queue.claim(node, fetch())
    assert holder(any_db) == "key-a"
    queue.claim(admin, fetch())
    assert holder(any_db) == "root"

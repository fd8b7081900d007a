"""Housekeeping run by every replica at once on one PostgreSQL database.

Each replica runs the same background loops (housekeeping.py). Lease expiry
and the ``max_queued_days`` sweep pick their rows ``FOR UPDATE SKIP LOCKED``
(test_queue_race.py proves claims); this file proves the purge, which used to
pick the same rows on both replicas: one deleted them, the other waited for
it and then counted rows it had not deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa
from openbeepboop_schemas import Role
from openbeepboop_server.db.tables import jobs
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.retention import PURGE_BATCH
from openbeepboop_server.queue.service import QueueService

from tests.support.core import chat_request, make_caller, migrated_database

REPLICAS = 3
FINISHED = 3 * PURGE_BATCH


def test_replicas_purging_at_once_delete_each_job_once_and_count_it_once(
    postgres_url_factory: Callable[[], str],
) -> None:
    url = postgres_url_factory()
    db = migrated_database(url)
    alice = make_caller(KeyService(db), Role.USER, "alice")
    QueueService(db, QueuePolicy()).submit_many(alice, [chat_request()] * FINISHED)
    with db.write() as conn:  # all finished long ago (past any retention)
        conn.execute(jobs.update().values(status="CANCELLED", completed_at=0.0))
    db.dispose()

    databases = [migrated_database(url) for _ in range(REPLICAS)]
    replicas = [QueueService(database, QueuePolicy()) for database in databases]
    start = threading.Barrier(REPLICAS)
    purged: list[int] = []
    errors: list[BaseException] = []

    def purge(queue: QueueService) -> None:
        start.wait()
        try:
            purged.append(queue.purge_finished())
        except BaseException as exc:  # collected: the assertion shows it
            errors.append(exc)

    threads = [threading.Thread(target=purge, args=(queue,)) for queue in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for database in databases:
        database.dispose()
    assert errors == []
    assert sum(purged) == FINISHED
    check = migrated_database(url)
    with check.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 0
    check.dispose()


def test_a_replica_starting_beside_a_live_one_grants_no_restart_grace(
    postgres_url_factory: Callable[[], str],
) -> None:
    # QA round 11: a replica crash-looping beside live ones moved a dead node's
    # leases a full period forward at every start, so its jobs never expired.
    from openbeepboop_schemas import FetchRequest
    from openbeepboop_server.dispatch.replicas import ReplicaListener
    from openbeepboop_server.dispatch.wakeups import Wakeups
    from openbeepboop_server.queue.leases import other_replicas_alive

    from tests.support.core import FakeClock

    url = postgres_url_factory()
    db = migrated_database(url)
    clock = FakeClock()
    policy = QueuePolicy(lease_seconds=60)
    keys = KeyService(db, clock=clock)
    alice, node = make_caller(keys, Role.USER, "alice"), make_caller(keys, Role.NODE, "gpu")
    queue = QueueService(db, policy, clock=clock)
    queue.submit(alice, chat_request())
    queue.claim(node, FetchRequest(node_id="dead", models=["*"], max_jobs=1))
    clock.advance(50)

    def lease_left() -> float:
        with db.read() as conn:
            expiry = conn.execute(sa.select(jobs.c.lease_expires_at)).scalar_one()
        return float(expiry) - clock.now

    live = ReplicaListener(db.engine, "live", Wakeups(), lambda: None)
    with live._connect() as conn:  # another replica, listening as every replica does
        live._listen(conn)
        restarted = QueueService(migrated_database(url), policy, clock=clock)
        assert restarted.grant_restart_grace() == 0
        assert lease_left() == 10
        # The database itself was unreachable: then no replica took heartbeats.
        assert restarted.grant_outage_grace() == 1
        assert lease_left() == 60
    watcher = migrated_database(url)
    while True:  # PostgreSQL ends the listener's session a moment after it closes
        with watcher.read() as conn:
            if not other_replicas_alive(conn):
                break
    watcher.dispose()
    clock.advance(50)
    # Alone (every replica was down): the grace is granted as on a single server.
    assert QueueService(migrated_database(url), policy, clock=clock).grant_restart_grace() == 1
    assert lease_left() == 60

"""The replica listener (dispatch/replicas.py): notices from other replicas wake long-polls,
its own are skipped, and a lost connection is re-made (with a re-check for the gap);
the key cache is on only while it listens, and dropped by a key change's notice.

Runs on PostgreSQL (skipped without one, failed under ``CI=true``). The other
replica is a second :class:`Database` on the same schema, writing as a
replica does; the listener is killed the way an outage or an admin would,
with ``pg_terminate_backend``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import sqlalchemy as sa
from openbeepboop_server.db import notify
from openbeepboop_server.db.database import Database
from openbeepboop_server.dispatch.replicas import ReplicaListener
from openbeepboop_server.dispatch.wakeups import Wakeups
from openbeepboop_server.key_cache import KeyCache

from tests.support.core import migrated_database

#: Deadlines for a loaded machine (conditions, never sleeps).
ARRIVAL_SECONDS = 10.0


async def _until(predicate: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ARRIVAL_SECONDS
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_notices_wake_this_replica_and_survive_a_lost_connection(
    postgres_url_factory: Callable[[], str],
) -> None:
    url = postgres_url_factory()
    here, there = migrated_database(url), Database.connect(url)
    try:
        asyncio.run(_scenario(here, there))
    finally:
        here.dispose()
        there.dispose()


async def _scenario(here: Database, there: Database) -> None:
    wakeups = Wakeups()
    rechecks: list[int] = []
    keys: KeyCache[str] = KeyCache()
    listener = ReplicaListener(
        here.engine, here.replica_id, wakeups, lambda: rechecks.append(1), key_cache=keys
    )
    assert not keys.enabled
    listener.start()
    try:
        await _until(listener.listening.is_set, "the listener to listen")
        await _until(lambda: len(rechecks) == 1, "the re-check after it started listening")
        assert keys.enabled
        assert not listener.unread()  # nothing waiting on an idle connection
        # A key changed anywhere (here: another process) drops every cached key.
        keys.put("digest", "alice", None, keys.generation)
        with there.write() as conn:
            notify.keys_changed(conn)
        await _until(lambda: keys.get("digest", 0.0) is None, "the key change's notice")
        keys.put("digest", "alice", None, keys.generation)
        with wakeups.watching(["job-1", "job-2"]) as waiter:
            # This replica's own notice is skipped: it woke its polls itself.
            with here.write() as conn:
                notify.jobs_finished(conn, ["job-1"])
            assert not await waiter.wait(1.0)
            # Another replica's finish wakes the poll watching the job.
            with there.write() as conn:
                notify.jobs_finished(conn, ["job-1"])
            assert await waiter.wait(ARRIVAL_SECONDS)
            waiter.clear()

            # The connection dies; the listener comes back and asks for a re-check.
            _terminate_listeners(there, listener)
            await _until(lambda: listener.connections == 2, "the listener to reconnect")
            await _until(listener.listening.is_set, "the listener to listen again")
            await _until(lambda: len(rechecks) == 2, "the re-check after the gap")
            # Key changes during the gap went unheard: what was cached before it is gone.
            assert keys.enabled and keys.get("digest", 0.0) is None
            with there.write() as conn:
                notify.jobs_finished(conn, ["job-2"])
            assert await waiter.wait(ARRIVAL_SECONDS)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, listener.stop)
    assert not keys.enabled
    assert listener.unread()  # no connection: nothing cached is to be trusted


def _terminate_listeners(db: Database, listener: ReplicaListener) -> None:
    """Kill the LISTEN connection of this schema's channel (not other tests' ones)."""
    with db.read() as conn:
        channel = conn.execute(sa.text(notify.CHANNEL_QUERY)).scalar_one()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        killed = conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query = :listen AND datname = current_database()"
            ),
            {"listen": f'LISTEN "{channel}"'},
        ).all()
    assert killed == [(True,)], killed
    assert listener.connections == 1

"""A real server whose database is unavailable says so once per loop, without tracebacks.

The database is made unavailable the way an operator's long migration or
lock would: another session holds PostgreSQL's ``jobs`` table locked, so
every background round waits out the server's lock timeout and fails.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from openbeepboop_server.config import load_settings, write_private_file
from openbeepboop_server.db.postgres import LOCK_TIMEOUT_SECONDS

from tests.test_crash import Server, set_up_server

#: The reaper's warning, once for the whole outage.
UNAVAILABLE = "expiring leases and old jobs: the database is unavailable"
BACK = "expiring leases and old jobs: the database answers again"


@pytest.fixture
def pg_server(tmp_path: Path, pg_url: str) -> Iterator[Server]:
    def admin(keys: object) -> dict[str, str]:
        return {}

    yield from set_up_server(tmp_path, pg_url, admin)


def wait_for_log(server: Server, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.output():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the server's log:\n{server.output()}")
        time.sleep(0.05)


def reaper_waits(watcher: sa.Connection) -> set[tuple[int, object]]:
    """The reaper's statements seen waiting for the lock: one per round, told apart by start."""
    rows = watcher.execute(
        sa.text(
            "SELECT pid, query_start FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%lease_expires_at%'"
        )
    )
    return {(row.pid, row.query_start) for row in rows}


def test_an_unavailable_database_is_one_line_per_loop_not_a_traceback_per_round(
    pg_server: Server, pg_url: str
) -> None:
    settings = load_settings(pg_server.config)
    settings.queue.reap_interval_seconds = 0.1
    write_private_file(pg_server.config, settings.to_toml())
    pg_server.start()
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as holder, engine.connect() as watcher:
            holder.execute(sa.text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))
            wait_for_log(pg_server, UNAVAILABLE)
            # Every round now waits out the lock timeout and fails: three seen
            # waiting means two at least have failed since the warning.
            seen: set[tuple[int, object]] = set()
            deadline = time.monotonic() + 10 * LOCK_TIMEOUT_SECONDS
            while len(seen) < 3:
                assert time.monotonic() < deadline, f"reaper rounds seen: {seen}"
                seen |= reaper_waits(watcher)
                watcher.commit()
                time.sleep(0.1)
            holder.rollback()
        wait_for_log(pg_server, BACK)
    finally:
        engine.dispose()
    log = pg_server.output()
    assert log.count(UNAVAILABLE) == 1, log
    assert "Traceback" not in log, log

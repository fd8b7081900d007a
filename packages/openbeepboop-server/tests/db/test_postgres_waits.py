"""Bounded waits on PostgreSQL (db/postgres.py, db/faults.py): a session that holds a
lock, or sits in its transaction, cannot stall a replica for ever.

Run on PostgreSQL only (skipped without one, failed under ``CI=true``). The
bounds asserted are "answered at all", many times the configured timeouts:
they tell a hang from an answer, not a fast answer from a slow one.
"""

from __future__ import annotations

import socket
import threading

import psycopg
import pytest
import sqlalchemy as sa
from openbeepboop_schemas import ChatCompletionRequest, Role
from openbeepboop_server.db import postgres
from openbeepboop_server.db.database import Database, create_engine
from openbeepboop_server.db.faults import is_unavailable
from openbeepboop_server.keys import KeyService, KeySettings
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.waiting import wait_until

#: Long enough to tell "waits for ever" from "gave up after its timeout" on a busy host.
ANSWERED_SECONDS = 12 * postgres.LOCK_TIMEOUT_SECONDS


def _plain(url: str) -> str:
    """A libpq connection string for a SQLAlchemy URL (its search_path option kept)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _request(content: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": content}]}
    )


def test_a_submit_behind_a_held_key_row_fails_within_the_lock_timeout(
    pg_db: Database, pg_url: str
) -> None:
    keys = KeyService(pg_db)
    key, _ = keys.create(Role.USER, "capped", KeySettings(max_queued=1000))
    caller = keys.authenticate(key)
    assert caller is not None
    queue = QueueService(pg_db, QueuePolicy())
    outcome: list[BaseException | str] = []

    def submit() -> None:
        try:
            queue.submit(caller, _request("blocked?"))
            outcome.append("submitted")
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    # A session holding the key's row, as a frozen replica mid-submit does.
    with psycopg.connect(_plain(pg_url)) as holder:
        holder.execute("SELECT * FROM api_keys WHERE name = 'capped' FOR UPDATE")
        worker = threading.Thread(target=submit, daemon=True)
        worker.start()
        worker.join(ANSWERED_SECONDS)
        assert not worker.is_alive(), "the submit still waits on the held row"
        holder.rollback()
    [error] = outcome
    assert isinstance(error, sa.exc.OperationalError), error
    assert isinstance(error.orig, psycopg.errors.LockNotAvailable)
    assert is_unavailable(error)
    # Nothing was half-written, and once the row is free the key submits again.
    job = queue.submit(caller, _request("after"))
    with pg_db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one() == 1
    assert queue.get(caller, job.id) is not None


def test_postgresql_ends_a_session_idle_in_its_transaction(pg_db: Database, pg_url: str) -> None:
    with pg_db.engine.connect() as conn:
        pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        # The transaction stays open and silent, as on a replica paused mid-write.
        with psycopg.connect(_plain(pg_url), autocommit=True) as admin:

            def ended() -> bool:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                return row is not None and row[0] == 0

            wait_until(ended, ANSWERED_SECONDS, "PostgreSQL to end the idle transaction")
        with pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text("SELECT 1"))
        assert is_unavailable(caught.value)


def test_connections_carry_the_bounds_and_migrations_do_not(pg_url: str) -> None:
    shown = "SELECT current_setting('lock_timeout'), "
    shown += "current_setting('idle_in_transaction_session_timeout'), "
    shown += "current_setting('search_path')"
    server = Database.connect(pg_url)
    migrations = create_engine(pg_url)
    try:
        with server.read() as conn:
            lock, idle, path = conn.execute(sa.text(shown)).one()
        assert (lock, idle) == (
            f"{postgres.LOCK_TIMEOUT_SECONDS}s",
            f"{postgres.IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s",
        )
        assert path == str(sa.make_url(pg_url).query["options"]).removeprefix("-csearch_path=")
        with migrations.connect() as conn:
            assert conn.execute(sa.text(shown)).one()[:2] == ("0", "0")
    finally:
        server.dispose()
        migrations.dispose()


def test_a_refused_connection_is_unavailable_not_a_bug() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    db = Database.connect(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught:
            db.ping()
        assert is_unavailable(caught.value)
    finally:
        db.dispose()
    assert not is_unavailable(sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key value")))

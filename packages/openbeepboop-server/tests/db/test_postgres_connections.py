"""PostgreSQL connections (db/postgres.py): dead ones replaced unseen, reads without a
transaction, a notice and its commit sent together.

Run on PostgreSQL only (skipped without one, failed under ``CI=true``).
"""

from __future__ import annotations

import contextlib

import psycopg
import sqlalchemy as sa
from openbeepboop_schemas import ChatCompletionRequest, Role
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.notify import decode
from openbeepboop_server.db.tables import api_keys
from openbeepboop_server.keys import KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService

from tests.support.core import make_caller
from tests.support.waiting import wait_until

#: Pooled connections killed at once (more than the pool's three checkout attempts).
POOLED = 5
#: A deadline for the server to finish terminating backends (a loaded host is slow).
GONE_SECONDS = 20.0


def _plain(url: str) -> str:
    """A libpq connection string for a SQLAlchemy URL (its search_path option kept)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _backend_pids(db: Database, count: int) -> list[int]:
    """Fill the pool with ``count`` connections (all checked out at once); their backends."""
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(db.engine.connect()) for _ in range(count)]
        return [
            int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()) for conn in conns
        ]


def _terminate(url: str, pids: list[int]) -> None:
    """Kill these backends, as a PostgreSQL restart or an admin would, and wait until gone."""
    with psycopg.connect(_plain(url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])

        def gone() -> bool:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            ).fetchone()
            return row is not None and row[0] == 0

        wait_until(gone, GONE_SECONDS, "the killed backends to exit")


def test_killed_pooled_connections_cost_no_request_an_error(pg_db: Database, pg_url: str) -> None:
    keys = KeyService(pg_db)
    user = make_caller(keys, Role.USER, "user")
    queue = QueueService(pg_db, QueuePolicy())
    pids = _backend_pids(pg_db, POOLED)
    _terminate(pg_url, pids)
    # Every pooled connection is dead: each checkout must find out without a request failing.
    for index in range(POOLED * 2):
        with pg_db.read() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        job = queue.submit(
            user,
            ChatCompletionRequest.model_validate(
                {"model": "m", "messages": [{"role": "user", "content": str(index)}]}
            ),
        )
        assert queue.get(user, job.id) is not None
    assert not set(_backend_pids(pg_db, POOLED)) & set(pids)


def test_a_connection_whose_server_hung_up_is_not_alive(pg_db: Database, pg_url: str) -> None:
    from openbeepboop_server.db.postgres import idle_connection_alive

    with pg_db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        conn.rollback()
        assert idle_connection_alive(driver)
        _terminate(pg_url, [pid])
        wait_until(lambda: not idle_connection_alive(driver), GONE_SECONDS, "the hang-up")
        conn.invalidate()


def test_reads_hold_no_transaction(pg_db: Database) -> None:
    with pg_db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one() == 0
        driver = conn.connection.driver_connection
        assert driver is not None
        assert driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_notice_with_quotes_and_percents_arrives_whole_and_only_on_commit(
    pg_db: Database, pg_url: str
) -> None:
    model = 'it\'s 100% "quoted" \\ {x}'
    keys = KeyService(pg_db)
    user = make_caller(keys, Role.USER, "user")
    queue = QueueService(pg_db, QueuePolicy())
    with psycopg.connect(_plain(pg_url), autocommit=True) as listener:
        channel = listener.execute("SELECT left('obb:' || current_schema(), 63)").fetchone()
        assert channel is not None
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel[0])))
        job = queue.submit(
            user,
            ChatCompletionRequest.model_validate(
                {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            ),
        )
        notices = [decode(m.payload) for m in listener.notifies(timeout=GONE_SECONDS, stop_after=1)]
    assert [n.available if n else None for n in notices] == [{model: 1}]
    # The notice and the commit went together: the job is there for whoever reads next.
    with pg_db.read() as conn:
        found = conn.execute(sa.text("SELECT model FROM jobs WHERE id = :id"), {"id": job.id})
        assert found.scalar_one() == model

"""PostgreSQL connections: found dead without a round trip, committed with their notice.

Every database round trip is on a request's critical path (a pickup is a
submit's transaction plus a claim's), so the pool does not spend one per
checkout on a ping (``pool_pre_ping``). A pooled connection sits idle with
nothing to read: the server only speaks when asked. So if its socket is
readable at checkout, the server has spoken unasked, which it does only to
say goodbye (a restart or ``pg_terminate_backend`` sends a FATAL error, then
closes), or the socket is closed. :func:`check_alive` then tells the pool to
replace the connection before it is handed out (a documented pool hook:
raising ``DisconnectionError`` in the ``checkout`` event), so a restarted
PostgreSQL costs no request an error. The look is one ``poll()`` system call.
A connection that dies after it was handed out fails that request, as it did
with a ping (the ping only ever ran before the first statement).

A write transaction ends with what it changed ``NOTIFY``ed to the other
replicas (:mod:`.notify`); :func:`notify_and_commit` sends that notice and
the ``COMMIT`` as one simple-protocol query string (two statements, one
round trip), which PostgreSQL runs in order and stops at the first error, so
a failed notice is never followed by the commit. psycopg sends a query
without parameters that way (its documented "multiple statements in the
same query"); the payloads are quoted by psycopg's own ``sql.Literal``.
"""

from __future__ import annotations

import importlib
import select
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

#: Events that mean "the server wrote or hung up" on an idle connection.
_UNASKED = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL
#: The statement that sends a transaction's payloads on the schema's channel.
_NOTIFY = "SELECT pg_notify(left('obb:' || current_schema(), 63), p) FROM unnest({}::text[]) AS p"


def has_input(fd: int) -> bool:
    """True if the socket ``fd`` has something to read, or is closed or broken (no wait)."""
    poller = select.poll()  # not select(): file descriptors past 1,024 are common here
    poller.register(fd, _UNASKED)
    return bool(poller.poll(0))


def idle_connection_alive(dbapi_connection: Any) -> bool:
    """False if an idle psycopg connection is known closed or its server spoke unasked."""
    if dbapi_connection.closed or dbapi_connection.broken:
        return False
    return not has_input(dbapi_connection.fileno())


def check_alive(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool ``checkout`` hook: have a dead connection replaced before it is used."""
    if not idle_connection_alive(dbapi_connection):
        raise sa.exc.DisconnectionError("the PostgreSQL server closed this pooled connection")


def configure(engine: sa.Engine) -> None:
    """Install the checkout check on a PostgreSQL engine."""
    event.listen(engine, "checkout", check_alive)


def notify_and_commit(conn: sa.Connection, payloads: list[str]) -> None:
    """Send ``payloads`` as notices and commit the transaction, in one round trip.

    The connection's transaction is then over at the driver; the ``COMMIT``
    SQLAlchemy sends when the block ends finds nothing to commit and costs
    nothing (psycopg skips it on an idle connection). Run through SQLAlchemy
    with no parameter list at all (``no_parameters``: the driver's simple
    protocol, a ``%`` in a payload left alone), so its errors arrive wrapped
    and a lost connection is invalidated as usual.
    """
    sql = importlib.import_module("psycopg.sql")
    driver = conn.connection.driver_connection
    quoted = ", ".join(sql.Literal(p).as_string(driver) for p in payloads)
    statement = _NOTIFY.format(f"ARRAY[{quoted}]") + "; COMMIT"
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True}).close()
